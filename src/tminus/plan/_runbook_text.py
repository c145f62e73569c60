"""Inline text of the runbook document: code and strong spans, texts built from them, and
the names derived from a plan's (section slugs, phase titles)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """Inline code: a command, a query, a name of a target."""

    text: str


@dataclass(frozen=True)
class Strong:
    text: str


Inline = str | Code | Strong
Text = tuple[Inline, ...]


def txt(*parts: Inline | Text | None) -> Text:
    """Build a text from parts, dropping empty ones and flattening nested texts."""
    out: list[Inline] = []
    for part in parts:
        if part is None:
            continue
        if isinstance(part, tuple):
            out.extend(p for p in part if p and (not isinstance(p, Code | Strong) or p.text))
        elif isinstance(part, str):
            if part:
                out.append(part)
        elif part.text:
            out.append(part)
    return tuple(out)


def plain(text: Text) -> str:
    """The text without formatting."""
    return "".join(p if isinstance(p, str) else p.text for p in text)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def phase_name(number: int, name: str) -> str:
    """A phase's name without a leading ``Phase N:`` the plan may already have written."""
    short = re.sub(rf"^\s*phase\s+{number}\s*[:.\-–—)]?\s*", "", name, flags=re.IGNORECASE)
    return short or name


def phase_title(number: int, name: str) -> str:
    """``Phase N: name``, or the name as written when it already says which phase it is."""
    return name if phase_name(number, name) != name else f"Phase {number}: {name}"
