"""Problems found in a plan: errors and warnings, each with file:line:column and a hint."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

__all__ = ["Loc", "Problem", "did_you_mean", "format_problems", "problems_json"]

#: A path into the YAML document: mapping keys and list indexes.
Loc = tuple[str | int, ...]


@dataclass
class Problem:
    """One thing wrong (``error``) or risky (``warning``) with a plan."""

    severity: Literal["error", "warning"]
    code: str
    message: str
    path: Loc = ()
    hint: str | None = None
    file: str | None = None
    line: int | None = None
    column: int | None = None
    key: str | None = field(default=None)

    @property
    def where(self) -> str:
        out = self.file or "<plan>"
        if self.line is not None:
            out += f":{self.line}:{self.column or 1}"
        return out

    def dotted_path(self) -> str:
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out

    def format(self) -> str:
        text = f"{self.where}: {self.severity}[{self.code}]: {self.message}"
        if self.path:
            text += f"\n    at {self.dotted_path()}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


def did_you_mean(word: str, choices: Iterable[str], n: int = 1) -> str | None:
    """A hint naming the closest choice, or None when nothing is close."""
    options = sorted({c for c in choices if isinstance(c, str)})
    close = difflib.get_close_matches(word, options, n=n, cutoff=0.6)
    if not close and options:
        lowered = {o.lower(): o for o in options}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return None


def format_problems(problems: Sequence[Problem]) -> str:
    return "\n".join(p.format() for p in problems)


def problems_json(problems: Sequence[Problem], *, ok: bool) -> str:
    data = {
        "ok": ok,
        "errors": sum(p.severity == "error" for p in problems),
        "warnings": sum(p.severity == "warning" for p in problems),
        "problems": [
            {**asdict(p), "path": list(p.path), "dotted_path": p.dotted_path()} for p in problems
        ],
    }
    return json.dumps(data, indent=2, default=str)
