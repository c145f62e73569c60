"""The report as Markdown: every figure as a table (the Gantt chart with text bars, each watch
series point by point); nothing external is referenced."""

from __future__ import annotations

from typing import Any

from tminus.report._fmt import duration, parse_iso, short_time, signed_duration

__all__ = ["LEGEND", "render_md"]

LEGEND = (
    "Planned: the phases' `estimate:` laid end to end from the origin (when the first phase "
    "started; the wait for the checklist and approvals is before it), a delayed phase its "
    "`after:` past the planned end of the phase before it. Actual: the recorded start and end "
    "of each phase. Variance: actual minus estimate. Critical path: phases run one after "
    "another, so every phase that ran is on the chain that set the end time; within each, its "
    "longest step set most of it."
)
_BAR = 24


_ESCAPE = str.maketrans(
    {"\\": "\\\\", "|": "\\|", "<": "\\<", "[": "\\[", "]": "\\]", "\n": " ", "\r": " "}
)


def _cell(value: Any) -> str:
    """A recorded text as inert Markdown: no table break, no HTML tag, no link or image."""
    text = "-" if value is None or value == "" else str(value)
    return text.translate(_ESCAPE)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return [*out, ""]


def _bar(offset: float, length: float, scale: float, char: str) -> str:
    a = round(offset * scale)
    n = max(1, round(length * scale)) if length > 0 else 0
    return "`" + (" " * a + char * n).ljust(_BAR + 1) + "`"


def _timeline(tl: dict[str, Any]) -> list[str]:
    out = ["## Timeline: planned versus actual", "", LEGEND, ""]
    out.append(
        f"Origin {short_time(tl['origin'])} ({tl['origin_is']}); window planned "
        f"{duration(tl['window_planned_s'])}, actual {duration(tl['window_actual_s'])}, "
        f"variance {signed_duration(tl['window_variance_s'])}."
    )
    out.append("")
    by_index = {p["index"]: p for p in tl["phases"]}
    for n, group in enumerate(tl["groups"]):
        phases = [by_index[i] for i in group]
        starts = [parse_iso(p[k]) for p in phases for k in ("planned_start", "actual_start")]
        t0 = min(t for t in starts if t is not None)
        ends = [(parse_iso(p["planned_start"]), p["estimate_s"] or 0.0) for p in phases] + [
            (parse_iso(p["actual_start"]), p["actual_s"] or 0.0) for p in phases
        ]
        span = max(((t - t0).total_seconds() + s for t, s in ends if t is not None), default=0.0)
        scale = _BAR / span if span > 0 else 0.0
        if n:
            out += [f"Delayed from phase {phases[0]['number']} on:", ""]
        rows = []
        for p in phases:
            ps, as_ = parse_iso(p["planned_start"]), parse_iso(p["actual_start"])
            assert ps is not None
            bar = _bar((ps - t0).total_seconds(), p["estimate_s"] or 0.0, scale, "░")
            actual = (
                _bar((as_ - t0).total_seconds(), p["actual_s"] or 0.0, scale, "█")
                if as_ is not None
                else ""
            )
            rows.append(
                [
                    f"{p['number']}. {p['name']}",
                    p["state"] + (" (downtime)" if p["downtime"] else ""),
                    short_time(p["planned_start"]),
                    duration(p["estimate_s"]),
                    short_time(p["actual_start"]),
                    duration(p["actual_s"]),
                    signed_duration(p["variance_s"]),
                    bar,
                    actual,
                ]
            )
        out += _table(
            ["phase", "state", "planned start", "planned", "actual start", "actual",
             "variance", "planned ░", "actual █"],
            rows,
        )  # fmt: skip
    crit = [
        [
            c["name"],
            duration(c["actual_s"]),
            c["step"]["title"] if c["step"] else None,
            duration(c["step"]["duration_s"]) if c["step"] else None,
        ]
        for c in tl["critical_path"]
    ]
    if crit:
        out += ["### Critical path", ""]
        out += _table(["phase", "actual", "longest step", "step duration"], crit)
    return out


def _steps(tl: dict[str, Any]) -> list[str]:
    rows = [
        [
            f"{p['number']}. {p['name']}",
            s["title"],
            s["kind"],
            s["state"],
            s["attempts"],
            duration(s["duration_s"]),
            s["error"],
        ]
        for p in tl["phases"]
        for s in p["steps"]
    ]
    if not rows:
        return []
    head = ["phase", "step", "kind", "state", "attempts", "duration", "error"]
    return ["### Steps", "", *_table(head, rows)]


def _downtime(dt: dict[str, Any]) -> list[str]:
    verdict = {True: "within the allowed downtime", False: "OVER the allowed downtime"}
    line = (
        f"Measured downtime {duration(dt['measured_s'])}; allowed (window `max_downtime`) "
        f"{duration(dt['max_downtime_s'])}; planned (downtime phases' estimates) "
        f"{duration(dt['planned_s'])}"
        + (f": {verdict[dt['within']]}" if dt["within"] is not None else "")
        + (" (maintenance is ON now)" if dt["on_now"] else "")
        + "."
    )
    rows = [
        [
            w["phase_name"],
            short_time(w["on_at"]),
            short_time(w["off_at"]),
            duration(w["duration_s"]),
        ]
        for w in dt["windows"]
    ]
    out = ["## Downtime", "", line, ""]
    return out + (_table(["phase", "maintenance on", "off", "duration"], rows) if rows else [])


def _people(r: dict[str, Any]) -> list[str]:
    out = ["## Approvals, confirmations and sign-offs", ""]
    rows = [
        [a["gate"], a["role"], a["person"], short_time(a["at"]), a["comment"]]
        for a in r["approvals"]
    ]
    out += (
        _table(["gate", "role", "who", "when", "comment"], rows) if rows else ["No approvals.", ""]
    )
    rows = [[c["item"], c["person"], short_time(c["at"])] for c in r["confirmations"]]
    if rows:
        out += ["Checklist confirmations:", "", *_table(["item", "who", "when"], rows)]
    out += ["### Sign-offs", ""]
    if not r["signoffs"]:
        out += ["No sign-offs yet (`tminus signoff DEPLOY --milestone day-1 ...`).", ""]
    for m in r["signoffs"]:
        rows = [
            [s["role"], s["person"], short_time(s["at"]), s["comment"]] for s in m["signatures"]
        ]
        out += [f"Milestone **{_cell(m['milestone'])}**:", ""]
        out += _table(["role", "who", "when", "comment"], rows)
    return out


def _rollbacks(rb: dict[str, Any]) -> list[str]:
    out = ["## Rollbacks", ""]
    if not rb["episodes"] and not rb["events"]:
        return [*out, "No rollback.", ""]
    for e in rb["episodes"]:
        out += [
            f"- {short_time(e['at'])}: rolled back because: {_cell(e['cause'])}; "
            f"outcome: {e['outcome']} ({short_time(e['outcome_at'])})"
        ]
        for a in e["actions"]:
            err = f": {_cell(a['error'])}" if a["error"] else ""
            out.append(f"  - {_cell(a['title'])}: {a['state']}{err}")
    if rb["events"]:
        out += ["", *_table(["when", "event", "message"], [
            [short_time(e["at"]), e["type"], e["message"]] for e in rb["events"]
        ])]  # fmt: skip
    return [*out, ""]


def _metrics(ms: list[dict[str, Any]]) -> list[str]:
    if not ms:
        return []
    rows = [
        [m["name"], m["target"], m["state"], m["status"], m["value"], m["message"],
         short_time(m["measured_at"] or m["due_at"])]
        for m in ms
    ]  # fmt: skip
    head = ["metric", "target", "state", "result", "value", "message", "measured / due"]
    return ["## Success metrics", "", *_table(head, rows)]


def _watch(w: dict[str, Any]) -> list[str]:
    out = ["## Post-deployment watch", ""]
    if not w["checks"]:
        msg = "No watch measurement recorded." if w["planned"] else "The plan has no watch."
        return [*out, msg, ""]
    for c in w["checks"]:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(c["counts"].items()))
        out += [f"### {_cell(c['check'])} ({counts})", ""]
        rows = [
            [short_time(p["at"]), p["period"], p["value"], p["status"].upper(), p["warn"],
             p["critical"]]
            for p in c["points"]
        ]  # fmt: skip
        out += _table(["when", "period", "value", "status", "WARN at", "CRITICAL at"], rows)
    return out


def _notifications(ns: list[dict[str, Any]]) -> list[str]:
    out = ["## Notifications", ""]
    if not ns:
        return [*out, "None recorded.", ""]
    out += [_NOTICES, ""]
    rows = [
        [short_time(n["at"]), n["when"], ", ".join(n["channels"]), _sent(n), n["message"]]
        for n in ns
    ]
    return out + _table(["when", "rule / step", "channels", "sent to", "message"], rows)


_NOTICES = (
    "Notices tminus recorded, with the channels each names and those it was delivered to "
    "(the receiver answered; `tminus notifications DEPLOY` has every attempt)."
)


def _sent(n: dict[str, Any]) -> str:
    return ", ".join(n.get("sent") or []) or "not sent"


def render_md(r: dict[str, Any]) -> str:
    d = r["deploy"]
    out = [
        f"# After-action report: {_cell(d['id'])}",
        "",
        f"Plan **{_cell(d['plan'])}**"
        + (f" {_cell(d['plan_version'])}" if d["plan_version"] else "")
        + f" ({_cell(d['environment'])}); state **{d['state']}**"
        + (f": {_cell(d['reason'])}" if d["reason"] else "")
        + f"; started by {_cell(d['started_by'])} at {short_time(d['created_at'])}"
        + (f", ended {short_time(d['finished_at'])}" if d["finished_at"] else "")
        + ".",
        "",
    ]
    if d["selection"]:
        out += ["Phases run (`--phase`): " + ", ".join(_cell(s) for s in d["selection"]), ""]
    out += _timeline(r["timeline"]) + _steps(r["timeline"]) + _downtime(r["downtime"])
    out += _people(r) + _rollbacks(r["rollbacks"]) + _metrics(r["success_metrics"])
    out += _watch(r["watch"]) + _notifications(r["notifications"])
    out.append(f"_Generated {short_time(r['generated_at'])} ({r['schema']})._")
    return "\n".join(out) + "\n"
