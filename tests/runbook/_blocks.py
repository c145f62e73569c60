"""The text of a rendered HTML runbook as the blocks a reader sees: one per table row, list
item, paragraph, heading, field (``dt`` with its ``dd``) and line of a preformatted block,
normalised (lower case, one space, typographic dashes and spaces made plain)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_NEW_BLOCK = {"tr", "li", "p", "h1", "h2", "h3", "h4", "dt", "pre", "figcaption", "caption"}
_SKIP = {"style", "script", "svg"}
_PLAIN = str.maketrans(
    {"\u2011": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u00a0": " ", "\u202f": " "}
)


def normalise(text: str) -> str:
    """Lower case, plain dashes and spaces, one space between words; Markdown's ``**`` and
    backticks (the seeds are Markdown) dropped."""
    text = text.translate(_PLAIN).replace("**", "").replace("`", "")
    return re.sub(r"\s+", " ", text).strip().lower()


class _Blocks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[list[str]] = [[]]
        self._skip = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag in _NEW_BLOCK:
            self.blocks.append([])
        elif tag in {"td", "th", "dd", "br"}:
            self.blocks[-1].append(" ")
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip -= 1
        elif tag == "pre":
            self._pre -= 1
            self.blocks.append([])

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._pre:  # a line of a preformatted block is a block of its own
            first, *rest = data.split("\n")
            self.blocks[-1].append(first)
            for line in rest:
                self.blocks.append([line])
            return
        self.blocks[-1].append(data)


def blocks(html: str) -> list[str]:
    """The normalised text blocks of ``html``, in document order, empty ones dropped."""
    parser = _Blocks()
    parser.feed(html)
    parser.close()
    return [b for b in (normalise("".join(parts)) for parts in parser.blocks) if b]
