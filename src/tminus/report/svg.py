"""Self-contained inline SVG charts for the report: the planned-versus-actual Gantt chart and
the watch's series with their WARN/CRITICAL thresholds. No script, no external reference, no
dependency: text built here, every label escaped.

Each drawn mark carries its data (``data-duration-s``, ``data-value``…) and the chart its scale
(``data-px-per-s``), so what a bar means can be read back from the figure."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from html import escape
from typing import Any

from tminus.report._fmt import duration, parse_iso, short_time, signed_duration

__all__ = ["gantt", "watch_chart"]

W = 900
COLORS = {
    "planned": "#b8c4d6",
    "actual": "#2f6db5",
    "failed": "#c0392b",
    "step": "#16365f",
    "ok": "#2e8b57",
    "warn": "#e69f00",
    "critical": "#c0392b",
    "error": "#7f7f7f",
    "grid": "#e3e3e3",
    "text": "#222222",
}
_FAILED = ("failed", "rolled_back")
_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
_STEPS_LONG = (10800, 21600, 43200, 86400, 172800, 604800)


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


def _n(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _tick_step(span: float, most: int = 8) -> float:
    for step in (*_STEPS, *_STEPS_LONG):
        if span / step <= most:
            return float(step)
    return span / most


def _open(width: int, height: int, label: str, extra: str = "") -> str:
    return (
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}" '
        f'font-family="sans-serif" font-size="12"{extra}>'
        f"<title>{_e(label)}</title>"
    )


def _seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


# --- the Gantt chart --------------------------------------------------------------------------
LEFT, RIGHT, TOP, ROW = 230, 90, 42, 34


def gantt(phases: list[dict[str, Any]], title: str) -> str:
    """Planned (upper, light) and actual (lower, dark; red when the phase failed or was rolled
    back) bars per phase on one time axis; inside each actual bar, the span of its longest
    step (the critical path's step); the variance at the right."""
    marks: list[datetime] = []
    for p in phases:
        for k in ("planned_start", "planned_end", "actual_start", "actual_end"):
            t = parse_iso(p[k])
            if t is not None:
                marks.append(t)
        start = parse_iso(p["actual_start"])
        if start is not None and p["actual_s"] is not None:
            marks.append(start + timedelta(seconds=p["actual_s"]))
    t0 = min(marks)
    span = max(_seconds(t0, max(marks)), 0.001)
    chart_w = W - LEFT - RIGHT
    scale = chart_w / span
    height = TOP + ROW * len(phases) + 46

    def x(t: datetime) -> float:
        return LEFT + _seconds(t0, t) * scale

    out = [_open(W, height, title, f' class="gantt" data-px-per-s="{scale:.6f}"')]
    out.append(f'<text x="4" y="16" font-weight="bold">{_e(title)}</text>')
    out.append(f'<text x="{W - RIGHT + 6}" y="16" fill="#555">variance</text>')
    step = _tick_step(span)
    tick = 0
    while tick * step <= span + 1e-9:
        tx = LEFT + tick * step * scale
        out.append(
            f'<line x1="{tx:.2f}" y1="{TOP - 4}" x2="{tx:.2f}" y2="{TOP + ROW * len(phases)}" '
            f'stroke="{COLORS["grid"]}"/>'
            f'<text x="{tx:.2f}" y="{TOP - 8}" text-anchor="middle" fill="#555">'
            f"+{_e(duration(tick * step))}</text>"
        )
        tick += 1
    for row, p in enumerate(phases):
        y = TOP + row * ROW
        label = f"{p['number']}. {p['name']}"
        label = label if len(label) <= 32 else label[:31] + "…"
        out.append(f'<text x="4" y="{y + 21}" fill="{COLORS["text"]}">{_e(label)}</text>')
        out.append(_bar(p, "planned", x, scale, y + 3))
        if p["actual_start"] is not None and p["actual_s"] is not None:
            out.append(_bar(p, "actual", x, scale, y + 17))
            cs = p.get("critical_step")
            if cs and cs.get("started_at") and cs.get("duration_s") is not None:
                sx = x(parse_iso(cs["started_at"]) or t0)
                out.append(
                    f'<rect class="critical-step" data-phase="{p["index"]}" '
                    f'data-duration-s="{cs["duration_s"]:.3f}" x="{sx:.2f}" y="{y + 25}" '
                    f'width="{max(cs["duration_s"] * scale, 0.5):.2f}" height="4" '
                    f'fill="{COLORS["step"]}"><title>longest step: {_e(cs["title"])} '
                    f"({_e(duration(cs['duration_s']))})</title></rect>"
                )
        variance = signed_duration(p["variance_s"]) if p["variance_s"] is not None else ""
        out.append(
            f'<text x="{W - RIGHT + 6}" y="{y + 21}" fill="{COLORS["text"]}">{_e(variance)}</text>'
        )
    ly = TOP + ROW * len(phases) + 22
    legend = [
        ("planned", "planned (estimate)"),
        ("actual", "actual"),
        ("failed", "failed / rolled back"),
        ("step", "longest step (critical path)"),
    ]
    lx = 4
    for color, text in legend:
        out.append(
            f'<rect x="{lx}" y="{ly - 10}" width="14" height="10" fill="{COLORS[color]}"/>'
            f'<text x="{lx + 18}" y="{ly}">{_e(text)}</text>'
        )
        lx += 32 + int(6.6 * len(text))
    out.append("</svg>")
    return "".join(out)


def _bar(p: dict[str, Any], which: str, x: Any, scale: float, y: int) -> str:
    if which == "planned":
        start, seconds = parse_iso(p["planned_start"]), p["estimate_s"] or 0.0
        color = COLORS["planned"]
        what = f"planned {duration(p['estimate_s'])} from {short_time(p['planned_start'])}"
    else:
        start, seconds = parse_iso(p["actual_start"]), float(p["actual_s"])
        color = COLORS["failed"] if p["state"] in _FAILED else COLORS["actual"]
        what = f"actual {duration(seconds)} from {short_time(p['actual_start'])} ({p['state']})"
    assert start is not None
    crit = " critical" if which == "actual" and p.get("critical") else ""
    return (
        f'<rect class="{which}{crit}" data-phase="{p["index"]}" data-duration-s="{seconds:.3f}" '
        f'x="{x(start):.2f}" y="{y}" width="{max(seconds * scale, 0.5):.2f}" height="12" '
        f'fill="{color}"><title>{_e(p["name"])}: {_e(what)}</title></rect>'
    )


# --- the watch's series -----------------------------------------------------------------------
WL, WR, WT, WB, WH = 70, 130, 30, 40, 260


def _runs(points: list[dict[str, Any]], key: str) -> list[tuple[int, int, float]]:
    """Consecutive points with the same threshold: (first, last, value)."""
    runs: list[tuple[int, int, float]] = []
    for i, p in enumerate(points):
        v = p[key]
        if v is None:
            continue
        if runs and runs[-1][2] == v and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i, v)
        else:
            runs.append((i, i, v))
    return runs


def _nice_range(lo: float, hi: float) -> tuple[float, float, float]:
    """Axis bounds on round numbers around [lo, hi], and the step between 4-6 gridlines."""
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    raw = (hi - lo) / 4
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step


def watch_chart(check: dict[str, Any]) -> str:
    """One check's measurements over time: the values joined (a gap where a measurement has
    no value), each point coloured by its status, the WARN and CRITICAL thresholds as dashed
    lines across the points measured against them."""
    points = check["points"]
    times = [parse_iso(p["at"]) for p in points]
    t0 = min(t for t in times if t is not None)
    t1 = max(t for t in times if t is not None)
    span = max(_seconds(t0, t1), 1.0)
    values = [p[k] for p in points for k in ("value", "warn", "critical") if p[k] is not None]
    lo, hi, ystep = _nice_range(*((min(values), max(values)) if values else (0.0, 1.0)))
    cw, ch = W - WL - WR, WH - WT - WB

    def x(i: int) -> float:
        t = times[i] or t0
        return WL + _seconds(t0, t) / span * cw

    def y(v: float) -> float:
        return WT + (hi - v) / (hi - lo) * ch

    title = f"watch: {check['check']}"
    out = [_open(W, WH, title, f' class="watch" data-check="{_e(check["check"])}"')]
    out.append(f'<text x="4" y="16" font-weight="bold">{_e(title)}</text>')
    out.append(f'<rect x="{WL}" y="{WT}" width="{cw}" height="{ch}" fill="none" stroke="#999"/>')
    for k in range(round((hi - lo) / ystep) + 1):
        v = lo + ystep * k
        out.append(
            f'<line x1="{WL}" y1="{y(v):.2f}" x2="{WL + cw}" y2="{y(v):.2f}" '
            f'stroke="{COLORS["grid"]}"/><text x="{WL - 6}" y="{y(v) + 4:.2f}" '
            f'text-anchor="end" fill="#555">{_e(_n(round(v, 2)))}</text>'
        )
    long = span > 2 * 86400
    for k in range(5):
        t = t0 + timedelta(seconds=span * k / 4)
        label = f"{t:%m-%d %H:%M}" if long else f"{t:%H:%M:%S}"
        out.append(
            f'<text x="{WL + cw * k / 4:.2f}" y="{WT + ch + 16}" text-anchor="middle" '
            f'fill="#555">{_e(label)}</text>'
        )
    for key, name in (("warn", "WARN"), ("critical", "CRITICAL")):
        runs = _runs(points, key)
        for n, (a, _last, v) in enumerate(runs):
            # a step line: from this run's first point to the next run's (the chart's edges
            # for the first and the last run)
            x1 = WL if n == 0 else x(a)
            x2 = WL + cw if n == len(runs) - 1 else x(runs[n + 1][0])
            if n < len(runs) - 1:
                out.append(
                    f'<text x="{x1 + 2:.2f}" y="{y(v) - 4:.2f}" fill="{COLORS[key]}" '
                    f'font-size="10">{name} {_e(_n(v))}</text>'
                )
            out.append(
                f'<line class="threshold {key}" data-value="{_e(_n(v))}" x1="{x1:.2f}" '
                f'y1="{y(v):.2f}" x2="{x2:.2f}" y2="{y(v):.2f}" stroke="{COLORS[key]}" '
                f'stroke-width="1.5" stroke-dasharray="6 4"><title>{name} {_e(_n(v))}'
                "</title></line>"
            )
            if n == len(runs) - 1:
                out.append(
                    f'<text x="{WL + cw + 6}" y="{y(v) + 4:.2f}" fill="{COLORS[key]}">'
                    f"{name} {_e(_n(v))}</text>"
                )
    segment: list[str] = []
    for i, p in enumerate([*points, {"value": None}]):
        if p["value"] is not None:
            segment.append(f"{x(i):.2f},{y(p['value']):.2f}")
            continue
        if len(segment) > 1:
            out.append(
                f'<polyline class="series" points="{" ".join(segment)}" fill="none" '
                f'stroke="{COLORS["actual"]}" stroke-width="1.5"/>'
            )
        segment = []
    for i, p in enumerate(points):
        status = p["status"] if p["status"] in COLORS else "error"
        v = p["value"]
        cy = y(v) if v is not None else WT + ch
        out.append(
            f'<circle class="point {_e(p["status"])}" data-value="{_e("" if v is None else _n(v))}"'
            f' cx="{x(i):.2f}" cy="{cy:.2f}" r="3.5" fill="{COLORS[status]}"><title>'
            f"{_e(short_time(p['at']))}: {_e('no value' if v is None else _n(v))} "
            f"({_e(p['status'])}{', ' + _e(p['period']) if p['period'] else ''})</title></circle>"
        )
    out.append("</svg>")
    return "".join(out)
