"""The report as one self-contained, printable HTML file: inline CSS and inline SVG charts, no
script, no external resource (no font, image, stylesheet or link to fetch)."""

from __future__ import annotations

from html import escape
from typing import Any

from tminus.report import svg
from tminus.report._fmt import duration, short_time, signed_duration
from tminus.report.md import LEGEND

__all__ = ["render_html"]

_CSS = """
body{font-family:sans-serif;color:#222;max-width:960px;margin:2em auto;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2}.num{text-align:right}.bad{color:#c0392b;font-weight:bold}
.ok{color:#2e8b57}.warn{color:#b07800}.muted{color:#666}figure{margin:.8em 0}
svg{max-width:100%;height:auto}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}figure,table{break-inside:avoid}}
"""


def _e(value: Any) -> str:
    return escape("-" if value is None or value == "" else str(value), quote=True)


def _table(head: list[str], rows: list[list[Any]], cls: list[str] | None = None) -> str:
    out = ["<table><thead><tr>", *(f"<th>{_e(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for r in rows:
        cells = []
        for n, c in enumerate(r):
            klass = f' class="{cls[n]}"' if cls and cls[n] else ""
            cells.append(f"<td{klass}>{_e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


def _timeline(tl: dict[str, Any]) -> str:
    by_index = {p["index"]: p for p in tl["phases"]}
    out = ["<h2>Timeline: planned versus actual</h2>", f"<p class='muted'>{_e(LEGEND)}</p>"]
    out.append(
        f"<p>Origin {_e(short_time(tl['origin']))} ({_e(tl['origin_is'])}); window planned "
        f"{_e(duration(tl['window_planned_s']))}, actual {_e(duration(tl['window_actual_s']))}, "
        f"variance {_e(signed_duration(tl['window_variance_s']))}.</p>"
    )
    for n, group in enumerate(tl["groups"]):
        phases = [by_index[i] for i in group]
        title = "Phases of the window" if n == 0 else f"Delayed from phase {phases[0]['number']}"
        out.append(f"<figure>{svg.gantt(phases, title)}</figure>")
    rows = [
        [f"{p['number']}. {p['name']}", p["state"] + (" (downtime)" if p["downtime"] else ""),
         short_time(p["planned_start"]), duration(p["estimate_s"]), short_time(p["actual_start"]),
         duration(p["actual_s"]), signed_duration(p["variance_s"]),
         "" if p["variance_pct"] is None else f"{p['variance_pct']:+.1f}%"]
        for p in tl["phases"]
    ]  # fmt: skip
    head = ["phase", "state", "planned start", "planned", "actual start", "actual", "variance", ""]
    out.append(_table(head, rows, ["", "", "", "num", "", "num", "num", "num"]))
    crit = [
        [c["name"], duration(c["actual_s"]), c["step"]["title"] if c["step"] else None,
         duration(c["step"]["duration_s"]) if c["step"] else None]
        for c in tl["critical_path"]
    ]  # fmt: skip
    if crit:
        out.append("<h3>Critical path</h3>")
        out.append(_table(["phase", "actual", "longest step", "step duration"], crit))
    steps = [
        [f"{p['number']}. {p['name']}", s["title"], s["kind"], s["state"], s["attempts"],
         duration(s["duration_s"]), s["error"]]
        for p in tl["phases"]
        for s in p["steps"]
    ]  # fmt: skip
    if steps:
        out.append("<h3>Steps</h3>")
        out.append(
            _table(["phase", "step", "kind", "state", "attempts", "duration", "error"], steps)
        )
    return "".join(out)


def _downtime(dt: dict[str, Any]) -> str:
    verdict = ""
    if dt["within"] is not None:
        verdict = (
            "<span class='ok'>within the allowed downtime</span>"
            if dt["within"]
            else "<span class='bad'>OVER the allowed downtime</span>"
        )
    out = [
        "<h2>Downtime</h2>",
        f"<p>Measured downtime <b class='downtime-measured' data-seconds='{dt['measured_s']:.3f}'>"
        f"{_e(duration(dt['measured_s']))}</b>; allowed (window <code>max_downtime</code>) "
        f"{_e(duration(dt['max_downtime_s']))}; planned {_e(duration(dt['planned_s']))}"
        + (f": {verdict}" if verdict else "")
        + (" <span class='bad'>(maintenance is ON now)</span>" if dt["on_now"] else "")
        + ".</p>",
    ]
    rows = [
        [
            w["phase_name"],
            short_time(w["on_at"]),
            short_time(w["off_at"]),
            duration(w["duration_s"]),
        ]
        for w in dt["windows"]
    ]
    if rows:
        out.append(_table(["phase", "maintenance on", "off", "duration"], rows))
    return "".join(out)


def _people(r: dict[str, Any]) -> str:
    out = ["<h2>Approvals, confirmations and sign-offs</h2>"]
    rows = [
        [a["gate"], a["role"], a["person"], short_time(a["at"]), a["comment"]]
        for a in r["approvals"]
    ]
    out.append(
        _table(["gate", "role", "who", "when", "comment"], rows) if rows else "<p>No approvals.</p>"
    )
    rows = [[c["item"], c["person"], short_time(c["at"])] for c in r["confirmations"]]
    if rows:
        out += ["<p>Checklist confirmations:</p>", _table(["item", "who", "when"], rows)]
    out.append("<h3>Sign-offs</h3>")
    if not r["signoffs"]:
        out.append("<p>No sign-offs yet.</p>")
    for m in r["signoffs"]:
        rows = [
            [s["role"], s["person"], short_time(s["at"]), s["comment"]] for s in m["signatures"]
        ]
        out.append(f"<p>Milestone <b>{_e(m['milestone'])}</b>:</p>")
        out.append(_table(["role", "who", "when", "comment"], rows))
    return "".join(out)


def _rollbacks(rb: dict[str, Any]) -> str:
    out = ["<h2>Rollbacks</h2>"]
    if not rb["episodes"] and not rb["events"]:
        return out[0] + "<p>No rollback.</p>"
    for e in rb["episodes"]:
        out.append(
            f"<p>{_e(short_time(e['at']))}: rolled back because: <b class='cause'>{_e(e['cause'])}"
            f"</b>; outcome: {_e(e['outcome'])} ({_e(short_time(e['outcome_at']))})</p>"
        )
        rows = [
            [a["title"], a["state"], short_time(a["started_at"]), a["error"]] for a in e["actions"]
        ]
        if rows:
            out.append(_table(["rollback action", "state", "started", "error"], rows))
    if rb["events"]:
        rows = [[short_time(e["at"]), e["type"], e["message"]] for e in rb["events"]]
        out.append(_table(["when", "event", "message"], rows))
    return "".join(out)


def _metrics(ms: list[dict[str, Any]]) -> str:
    if not ms:
        return ""
    rows = [
        [m["name"], m["target"], m["state"], m["status"], m["value"], m["message"],
         short_time(m["measured_at"] or m["due_at"])]
        for m in ms
    ]  # fmt: skip
    head = ["metric", "target", "state", "result", "value", "message", "measured / due"]
    return "<h2>Success metrics</h2>" + _table(head, rows)


def _watch(w: dict[str, Any]) -> str:
    out = ["<h2>Post-deployment watch</h2>"]
    if not w["checks"]:
        msg = "No watch measurement recorded." if w["planned"] else "The plan has no watch."
        return out[0] + f"<p>{msg}</p>"
    for c in w["checks"]:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(c["counts"].items()))
        out.append(f"<h3>{_e(c['check'])} <span class='muted'>({_e(counts)})</span></h3>")
        out.append(f"<figure>{svg.watch_chart(c)}</figure>")
    return "".join(out)


def _notifications(ns: list[dict[str, Any]]) -> str:
    out = ["<h2>Notifications</h2>"]
    if not ns:
        return out[0] + "<p>None recorded.</p>"
    out.append(
        "<p class='muted'>Notices tminus recorded, with the channels each names and those it "
        "was delivered to (the receiver answered; <code>tminus notifications DEPLOY</code> has "
        "every attempt).</p>"
    )
    rows = [
        [
            short_time(n["at"]),
            n["when"],
            ", ".join(n["channels"]),
            ", ".join(n.get("sent") or []) or "not sent",
            n["message"],
        ]
        for n in ns
    ]
    out.append(_table(["when", "rule / step", "channels", "sent to", "message"], rows))
    return "".join(out)


def render_html(r: dict[str, Any]) -> str:
    d = r["deploy"]
    head = (
        f"Plan <b>{_e(d['plan'])}</b>"
        + (f" {_e(d['plan_version'])}" if d["plan_version"] else "")
        + f" ({_e(d['environment'])}); state <b>{_e(d['state'])}</b>"
        + (f": {_e(d['reason'])}" if d["reason"] else "")
        + f"; started by {_e(d['started_by'])} at {_e(short_time(d['created_at']))}"
        + (f", ended {_e(short_time(d['finished_at']))}" if d["finished_at"] else "")
        + "."
    )
    sel = (
        f"<p>Phases run (<code>--phase</code>): {_e(', '.join(d['selection']))}</p>"
        if d["selection"]
        else ""
    )
    body = "".join(
        [
            f"<h1>After-action report: {_e(d['id'])}</h1><p>{head}</p>{sel}",
            _timeline(r["timeline"]),
            _downtime(r["downtime"]),
            _people(r),
            _rollbacks(r["rollbacks"]),
            _metrics(r["success_metrics"]),
            _watch(r["watch"]),
            _notifications(r["notifications"]),
            f"<p class='muted'>Generated {_e(short_time(r['generated_at']))} "
            f"({_e(r['schema'])})</p>",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>After-action report: {_e(d['id'])}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )
