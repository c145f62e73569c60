"""Lay out a :class:`~tminus.plan._runbook.Runbook` as GitHub-flavoured Markdown."""

from __future__ import annotations

import re

from tminus.plan._runbook import (
    Block,
    Chart,
    Code,
    Fields,
    Item,
    Items,
    Para,
    Pre,
    Runbook,
    Section,
    Strong,
    Table,
    Text,
)

__all__ = ["to_markdown"]

_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def _plain(text: str, cell: bool) -> str:
    # Keep user text readable, but never let it become HTML or break a table.
    out = _TAG_START.sub("&lt;", text)
    if cell:
        out = re.sub(r"\s+", " ", out).replace("|", "\\|")
    return out


def _code(text: str, cell: bool) -> str:
    text = " ".join(text.split())
    if cell:
        text = text.replace("|", "\\|")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def inline(text: Text, cell: bool = False) -> str:
    parts: list[str] = []
    for part in text:
        if isinstance(part, Code):
            parts.append(_code(part.text, cell))
        elif isinstance(part, Strong):
            strong = _plain(part.text, cell).replace("*", "\\*")
            parts.append(f"**{strong.strip()}**")
        else:
            parts.append(_plain(part, cell))
    return "".join(parts)


def _line(text: Text) -> str:
    return " ".join(inline(text).split())


def _items(items: list[Item], ordered: bool, indent: str = "") -> list[str]:
    out: list[str] = []
    for n, item in enumerate(items, 1):
        marker = f"{n}." if ordered else "-"
        box = "[ ] " if item.checkbox else ""
        out.append(f"{indent}{marker} {box}{_line(item.text)}")
        if item.children:
            out += _items(item.children, False, indent + " " * (len(marker) + 1))
    return out


def _table(table: Table) -> list[str]:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    out = [row(table.headers), row(["---"] * len(table.headers))]
    out += [row([inline(c, cell=True) for c in r]) for r in table.rows]
    return out


def _block(block: Block) -> list[str]:
    if isinstance(block, Para):
        return [inline(block.text).strip()]
    if isinstance(block, Fields):
        if block.inline:
            return [" · ".join(f"**{label}:** {_line(value)}" for label, value in block.items)]
        return [f"- **{label}:** {_line(value)}" for label, value in block.items]
    if isinstance(block, Items):
        return _items(block.items, block.ordered)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Pre):
        longest = max((len(m) for m in re.findall(r"`{3,}", block.text)), default=2)
        fence = "`" * (longest + 1)
        return [fence, block.text, fence]
    if isinstance(block, Chart):
        return []  # the chart is drawn in HTML only; Markdown has the T-lines
    raise TypeError(f"unknown block {block!r}")


def _section(section: Section, level: int) -> list[str]:
    out = ["#" * level + " " + _plain(section.title, cell=True), ""]
    for block in section.blocks:
        lines = _block(block)
        if lines:
            out += [*lines, ""]
    for child in section.children:
        if level == 2 and child.page_break:
            out += ["---", ""]
        out += _section(child, level + 1)
    return out


def to_markdown(runbook: Runbook) -> str:
    out = ["# " + _plain(runbook.title, cell=True), "", f"_{runbook.subtitle}_", ""]
    for section in runbook.sections:
        out += ["---", ""]
        out += _section(section, 2)
    out += ["---", "", f"_{runbook.footer}_"]
    return "\n".join(out).rstrip() + "\n"
