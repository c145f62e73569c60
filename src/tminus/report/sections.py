"""The report's sections other than the timeline, each from the store's rows and events:
downtime, approvals and confirmations, sign-offs, rollbacks, success metrics, the watch's
measurements and the notifications recorded."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.report._fmt import iso, parse_iso

if TYPE_CHECKING:
    from tminus.plan.model import Plan

__all__ = [
    "SIGNOFF_PREFIX",
    "approvals",
    "downtime",
    "notifications",
    "rollbacks",
    "signoffs",
    "success_metrics",
    "watch",
]

#: Sign-offs are approval rows whose gate is ``signoff:<milestone>``.
SIGNOFF_PREFIX = "signoff:"

_END_STATES = ("deploy.rolled_back", "deploy.failed", "deploy.aborted", "deploy.succeeded")


def downtime(
    plan: Plan | None, windows: list[dict[str, Any]], names: dict[int, str]
) -> dict[str, Any]:
    """The maintenance windows recorded, their total against the window's ``max_downtime``."""
    t = now()
    rows = []
    for w in windows:
        end = w["off_at"] or t
        rows.append(
            {
                "phase": w["phase"],
                "phase_name": names.get(int(w["phase"]), f"#{int(w['phase']) + 1}"),
                "on_at": iso(w["on_at"]),
                "off_at": iso(w["off_at"]),
                "duration_s": (end - w["on_at"]).total_seconds(),
            }
        )
    total = sum(r["duration_s"] for r in rows)
    allowed = plan.window.max_downtime if plan is not None else None
    allowed_s = allowed.total_seconds() if allowed is not None else None
    planned = plan.downtime_estimate().total_seconds() if plan is not None else None
    return {
        "measured_s": total,
        "max_downtime_s": allowed_s,
        "planned_s": planned,
        "within": None if allowed_s is None else total <= allowed_s,
        "on_now": any(w["off_at"] is None for w in windows),
        "windows": rows,
    }


def approvals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Approvals (the plan's gate and ``approve`` steps), oldest first; sign-offs excluded."""
    return [
        {
            "gate": a["gate"],
            "role": a["role"],
            "person": a["person"],
            "comment": a["comment"],
            "at": iso(a["ts"]),
        }
        for a in sorted(rows, key=lambda a: a["ts"])
        if not str(a["gate"]).startswith(SIGNOFF_PREFIX)
    ]


def confirmations(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"item": item, "person": c["person"], "at": iso(c["ts"])}
        for item, c in sorted(rows.items(), key=lambda kv: kv[1]["ts"])
    ]


def signoffs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per milestone (in the order first signed), who signed off in which role, and when."""
    out: dict[str, list[dict[str, Any]]] = {}
    for a in sorted(rows, key=lambda a: a["ts"]):
        gate = str(a["gate"])
        if gate.startswith(SIGNOFF_PREFIX):
            out.setdefault(gate[len(SIGNOFF_PREFIX) :], []).append(
                {
                    "role": a["role"],
                    "person": a["person"],
                    "comment": a["comment"],
                    "at": iso(a["ts"]),
                }
            )
    return [{"milestone": m, "signatures": s} for m, s in out.items()]


def rollbacks(events: list[dict[str, Any]], steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each rollback (a ``deploy.rolling_back`` event): its cause, what it ran and how it
    ended; and every rollback-related event (``rollback*``, ``compensation*``, a rollback
    trigger firing) as recorded."""
    actions = sorted(
        (
            {
                "key": k,
                "title": r["title"],
                "state": r["state"],
                "started_at": r["started_at"],
                "ended_at": r["ended_at"],
                "error": r["error"],
            }
            for k, r in steps.items()
            if k.startswith("rollback/")
        ),
        key=lambda a: (a["started_at"] is None, a["started_at"] or now(), a["key"]),
    )
    episodes: list[dict[str, Any]] = []
    related: list[dict[str, Any]] = []
    for n, e in enumerate(events):
        kind = str(e["type"])
        data = e["data"] or {}
        if kind.startswith(("rollback", "compensation")) or kind == "trigger.fired":
            related.append({"at": iso(e["ts"]), "type": kind, "message": e["message"]})
        if kind != "deploy.rolling_back":
            continue
        end = next((x for x in events[n + 1 :] if x["type"] in _END_STATES), None)
        stop = end["ts"] if end is not None else None
        ran = [
            a
            for a in actions
            if a["started_at"] is not None
            and a["started_at"] >= e["ts"]
            and (stop is None or a["started_at"] <= stop)
        ]
        plan_items = data.get("rollback_plan")
        episodes.append(
            {
                "at": iso(e["ts"]),
                "cause": data.get("reason") or e["message"],
                "planned_actions": [str(i.get("title")) for i in plan_items]
                if isinstance(plan_items, list)
                else None,
                "actions": [
                    a | {"started_at": iso(a["started_at"]), "ended_at": iso(a["ended_at"])}
                    for a in ran
                ],
                "outcome": str(end["type"]).removeprefix("deploy.") if end else "in progress",
                "outcome_at": iso(stop),
            }
        )
    return {"episodes": episodes, "events": related}


def success_metrics(
    plan: Plan | None, events: list[dict[str, Any]], state: str
) -> list[dict[str, Any]]:
    """Per success metric of the plan: its target and what was measured (the ``summary`` and
    ``metric.measured`` events), or that it is pending, cancelled, not yet due or unmeasured
    (no check). The same reading as ``tminus status``, from the same events."""
    from tminus.store.events import metric_records

    scheduled, measured = metric_records(events)
    out: list[dict[str, Any]] = []
    for i, m in enumerate(plan.success_metrics if plan is not None else []):
        got = measured.get(i, {})
        item: dict[str, Any] = {
            "name": m.name,
            "target": m.target,
            "monitoring": m.monitoring,
            "status": got.get("status"),
            "level": got.get("level"),
            "value": got.get("value"),
            "message": got.get("message"),
            "measured_at": got.get("measured_at"),
            "due_at": scheduled.get(i, {}).get("due_at"),
        }
        if m.check is None:
            item["state"] = "no check"
        elif got:
            item["state"] = "measured"
        elif i in scheduled:
            cancelled = state in ("rolled_back", "failed", "aborted", "rolling_back")
            item["state"] = "cancelled" if cancelled else "pending"
        else:
            item["state"] = "not yet"
        out.append(item)
    return out


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def watch(plan: Plan | None, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The post-deployment watch's measurements (``watch.measurement`` events), one series per
    check, in time order. Each point keeps the thresholds it was measured against."""
    series: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["type"] != "watch.measurement":
            continue
        data = e["data"] or {}
        name = str(data.get("check") or "?")
        at = parse_iso(data.get("at")) or e["ts"]
        series.setdefault(name, []).append(
            {
                "at": iso(at),
                "period": data.get("period"),
                "status": str(data.get("status") or "?"),
                "value": _num(data.get("value")),
                "warn": _num(data.get("warn")),
                "critical": _num(data.get("critical")),
            }
        )
    checks = []
    for name, points in series.items():
        points.sort(key=lambda p: p["at"])
        counts: dict[str, int] = {}
        for p in points:
            counts[p["status"]] = counts.get(p["status"], 0) + 1
        checks.append({"check": name, "points": points, "counts": counts})
    return {
        "planned": plan is not None and plan.watch is not None and bool(plan.watch.schedule),
        "on_critical": plan.watch.on_critical if plan is not None and plan.watch else None,
        "checks": checks,
    }


def notifications(
    events: list[dict[str, Any]], outbox: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The notices tminus recorded (events ``notify``): when, the rule or step that made it,
    the channels it names, those it was *sent* to (its outbox rows, by key, that were
    delivered) and its text."""
    sent_keys = {str(r["key"]): str(r["channel"]) for r in outbox if r["state"] == "sent"}
    out = []
    for e in events:
        if e["type"] != "notify":
            continue
        data = e["data"] or {}
        channels = data.get("channels")
        keys = [str(k) for k in data.get("keys") or []]
        out.append(
            {
                "at": iso(e["ts"]),
                "type": e["type"],
                "when": data.get("when") or ("step " + e["key"] if e["key"] else None),
                "channels": [str(c) for c in channels] if isinstance(channels, list) else [],
                "sent": sorted({sent_keys[k] for k in keys if k in sent_keys}),
                "severity": data.get("severity"),
                "message": e["message"],
            }
        )
    return out
