"""The runbook as a neutral document, and one-line descriptions of steps and checks.

:func:`tminus.plan.render.build_runbook` assembles a :class:`Runbook` (sections of fields,
tables, lists and preformatted text); both renderers (Markdown and HTML) walk the same
document, so what a runbook says is decided once. Nothing is ever interpolated: values are
printed as written in the plan (``${...}`` references included), and fields that may hold
credentials (URLs of databases and channels, headers, tokens, env values) are never printed.

The document's blocks and sections are here; its inline text is in ``_runbook_text``, the
T-timeline in ``_runbook_timeline`` and the one-line descriptions of steps and checks in
``_runbook_lines``, all re-exported from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tminus.plan._runbook_lines import (
    automatic_compensation,
    check_source,
    condition_text,
    levels,
    nested_steps,
    one_line,
    ref_name_hint,
    summarize_step,
)
from tminus.plan._runbook_text import (
    Code,
    Inline,
    Strong,
    Text,
    phase_name,
    phase_title,
    plain,
    slug,
    txt,
)
from tminus.plan._runbook_timeline import Timeline, TimelineBar, TimelineRow, build_timeline

__all__ = [
    "Block",
    "Chart",
    "Code",
    "Fields",
    "Inline",
    "Item",
    "Items",
    "Para",
    "Pre",
    "Runbook",
    "Section",
    "Strong",
    "Table",
    "Text",
    "Timeline",
    "TimelineBar",
    "TimelineRow",
    "automatic_compensation",
    "build_timeline",
    "check_source",
    "condition_text",
    "levels",
    "nested_steps",
    "one_line",
    "phase_name",
    "phase_title",
    "plain",
    "ref_name_hint",
    "slug",
    "summarize_step",
    "txt",
]


@dataclass
class Para:
    text: Text


@dataclass
class Fields:
    """Label → value pairs (metadata, a phase's facts); ``inline``: on one line, as a
    paragraph (a phase's or an operation's facts), instead of one line each."""

    items: list[tuple[str, Text]]
    inline: bool = False


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Text]]
    #: "tasks": the first column holds tick boxes, the last two are filled in on paper.
    kind: str = ""


@dataclass
class Item:
    text: Text
    children: list[Item] = field(default_factory=list)
    checkbox: bool = False


@dataclass
class Items:
    items: list[Item]
    ordered: bool = False


@dataclass
class Pre:
    text: str
    kind: str = "code"  # "t-timeline" for the T-lines


@dataclass
class Chart:
    """The Gantt-like timeline; only HTML draws it (Markdown has the T-lines)."""

    timeline: Timeline


Block = Para | Fields | Table | Items | Pre | Chart


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)
    page_break: bool = False
    #: Printed alone: what follows starts on a new page (the one-page summary).
    page_after: bool = False


@dataclass
class Runbook:
    title: str
    subtitle: str
    sections: list[Section]
    #: "compact": the bridge copy (printed smaller).
    kind: str = ""
    #: The closing line: whether values were resolved.
    footer: str = "Rendered by tminus from the plan; nothing in it was resolved."
