"""Lay out a :class:`~tminus.plan._runbook.Runbook` as one self-contained HTML file.

Inline CSS (``templates/runbook.css``, shipped in the package) and an inline SVG timeline chart;
no scripts and no external resources. Every piece of user text goes through :func:`html.escape`.
"""

from __future__ import annotations

from html import escape
from importlib import resources

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
    Timeline,
    TimelineBar,
)
from tminus.plan.values import format_duration

__all__ = ["to_html"]


def _css() -> str:
    return (resources.files("tminus.plan") / "templates" / "runbook.css").read_text("utf-8")


def _e(text: str) -> str:
    return escape(text, quote=True)


def inline(text: Text) -> str:
    parts: list[str] = []
    for part in text:
        if isinstance(part, Code):
            parts.append(f"<code>{_e(part.text)}</code>")
        elif isinstance(part, Strong):
            parts.append(f"<strong>{_e(part.text)}</strong>")
        else:
            parts.append(_e(part))
    return "".join(parts)


def _items(items: list[Item], ordered: bool) -> str:
    tag = "ol" if ordered else "ul"
    out = [f"<{tag}>"]
    for item in items:
        box = '<span class="box">☐</span> ' if item.checkbox else ""
        children = _items(item.children, False) if item.children else ""
        cls = ' class="check"' if item.checkbox else ""
        out.append(f"<li{cls}>{box}{inline(item.text)}{children}</li>")
    out.append(f"</{tag}>")
    return "\n".join(out)


def _table(table: Table) -> str:
    kind = "sign-off" if "Signature" in table.headers else table.kind
    cls = f' class="{_e(kind)}"' if kind else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in table.headers)
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    return f"<table{cls}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def _block(block: Block) -> str:
    if isinstance(block, Para):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Fields):
        if block.inline:
            facts = " · ".join(
                f'<span class="fact"><strong>{_e(k)}:</strong> {inline(v)}</span>'
                for k, v in block.items
            )
            return f'<p class="fields-inline">{facts}</p>'
        pairs = "".join(f"<dt>{_e(k)}</dt><dd>{inline(v)}</dd>" for k, v in block.items)
        return f'<dl class="fields">{pairs}</dl>'
    if isinstance(block, Items):
        return _items(block.items, block.ordered)
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Pre):
        return f'<pre class="{_e(block.kind)}">{_e(block.text)}</pre>'
    if isinstance(block, Chart):
        return chart(block.timeline)
    raise TypeError(f"unknown block {block!r}")


def _section(section: Section, level: int) -> str:
    classes = [
        c
        for c, on in (("page-break", section.page_break), ("page-after", section.page_after))
        if on
    ]
    cls = f' class="{" ".join(classes)}"' if classes else ""
    out = [f'<section id="{_e(section.id)}"{cls}>', f"<h{level}>{_e(section.title)}</h{level}>"]
    out += [_block(b) for b in section.blocks]
    out += [_section(c, min(level + 1, 6)) for c in section.children]
    out.append("</section>")
    return "\n".join(out)


def _toc(runbook: Runbook) -> str:
    entries = []
    for s in runbook.sections:
        children = "".join(f'<li><a href="#{_e(c.id)}">{_e(c.title)}</a></li>' for c in s.children)
        sub = f"<ol>{children}</ol>" if children else ""
        entries.append(f'<li><a href="#{_e(s.id)}">{_e(s.title)}</a>{sub}</li>')
    return '<nav class="toc"><h2>Contents</h2><ol>' + "".join(entries) + "</ol></nav>"


def to_html(runbook: Runbook) -> str:
    body = "\n".join(_section(s, 2) for s in runbook.sections)
    return f"""<!doctype html>
<html lang="en"{' class="compact"' if runbook.kind == "compact" else ""}>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="tminus">
<title>{_e(runbook.title)} — runbook</title>
<style>
{_css()}
</style>
</head>
<body>
<header>
<h1>{_e(runbook.title)}</h1>
<p class="subtitle">{_e(runbook.subtitle)}</p>
</header>
{_toc(runbook)}
<main>
{body}
</main>
<footer><p>{_e(runbook.footer)}</p></footer>
</body>
</html>
"""


# --- the Gantt-like timeline chart ----------------------------------------------------------

_W, _LABEL, _RIGHT, _GAP, _ROW, _TOP = 960, 240, 100, 56, 28, 44


def _units(bar: TimelineBar, nominal: bool) -> float:
    if nominal:
        return 1.0
    return bar.length.total_seconds() if bar.length is not None else 0.0


def chart(timeline: Timeline) -> str:
    """One bar per phase at its planned time; delayed phases after a break with their delay."""
    bars = timeline.bars
    if not bars:
        return ""
    nominal = sum(_units(b, False) for b in bars) == 0
    segments = sorted({b.segment for b in bars})
    seg_len = {s: sum(_units(b, nominal) for b in bars if b.segment == s) for s in segments}
    total = sum(seg_len.values()) or 1.0
    scale = (_W - _LABEL - _RIGHT - _GAP * (len(segments) - 1)) / total
    seg_x: dict[int, float] = {}
    x = float(_LABEL)
    for s in segments:
        seg_x[s] = x
        x += seg_len[s] * scale + _GAP
    height = _TOP + _ROW * len(bars) + 44
    bottom = _TOP + _ROW * len(bars)
    out = [
        f'<svg viewBox="0 0 {_W} {height}" '
        f'width="{_W}" height="{height}" role="img" aria-label="Timeline of the phases">',
        "<title>Planned timeline of the phases</title>",
    ]
    for s in segments:
        x0, x1 = seg_x[s], seg_x[s] + seg_len[s] * scale
        first = next(b for b in bars if b.segment == s)
        out.append(
            f'<line class="grid" x1="{x0:.1f}" y1="{_TOP - 8}" x2="{x1:.1f}" y2="{_TOP - 8}"/>'
        )
        out.append(
            f'<line class="grid" x1="{x0:.1f}" y1="{_TOP - 14}" x2="{x0:.1f}" y2="{bottom}"/>'
        )
        out.append(f'<text class="mark" x="{x0:.1f}" y="{_TOP - 18}">{_e(first.start_mark)}</text>')
        if first.delay is not None:
            cx = x0 - _GAP / 2
            out.append(
                f'<path class="break" d="M{cx - 7:.1f},{_TOP - 2} l5,-12 M{cx + 1:.1f},{_TOP - 2} '
                f'l5,-12 M{cx:.1f},{_TOP + 2} V{bottom}" stroke-dasharray="4 3"/>'
            )
            out.append(
                f'<text class="delay" x="{cx:.1f}" y="12" text-anchor="middle">'
                f"{_e(first.delay)}</text>"
            )
    cursor = {s: 0.0 for s in segments}
    for row, bar in enumerate(bars):
        y = _TOP + row * _ROW
        bx = seg_x[bar.segment] + cursor[bar.segment] * scale
        units = _units(bar, nominal)
        cursor[bar.segment] += units
        width = max(units * scale, 3.0)
        cls = "bar none" if bar.length is None else ("bar downtime" if bar.downtime else "bar")
        if bar.length is None:
            width = 8.0
        label = f"{bar.number}. {bar.name}"
        short = label if len(label) <= 34 else label[:33] + "…"
        est = format_duration(bar.length) if bar.length is not None else "no estimate"
        tip = f"{label}: {bar.start_mark} → {bar.end_mark} ({est})"
        if bar.downtime:
            tip += ", downtime"
        out.append(
            f"<g><title>{_e(tip)}</title>"
            f'<text class="label" x="{_LABEL - 10}" y="{y + 17}" text-anchor="end">'
            f"{_e(short)}</text>"
            f'<rect class="{cls}" x="{bx:.1f}" y="{y + 6}" width="{width:.1f}" '
            f'height="{_ROW - 10}" rx="2"/>'
            f'<text class="mark" x="{bx + width + 5:.1f}" y="{y + 18}">'
            f"{_e(bar.end_mark)}</text></g>"
        )
    ly = bottom + 22
    legend = [("bar", "phase"), ("bar downtime", "downtime"), ("bar none", "no estimate")]
    lx = float(_LABEL)
    for cls, text in legend:
        out.append(f'<rect class="{cls}" x="{lx:.1f}" y="{ly - 10}" width="14" height="10"/>')
        out.append(f'<text class="mark" x="{lx + 19:.1f}" y="{ly}">{text}</text>')
        lx += 40 + 7 * len(text)
    if nominal:
        out.append(f'<text class="mark" x="{lx:.1f}" y="{ly}">(no estimates: equal widths)</text>')
    out.append("</svg>")
    return '<figure class="chart">' + "\n".join(out) + "</figure>"
