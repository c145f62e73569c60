"""Which timers a deploy has: the time-based parts of its plan, laid on its own times.

Times a deploy's timers are laid on:

- **T-0**, the scheduled start of a deploy registered with ``tminus schedule`` (the latest
  ``deploy.scheduled``/``deploy.rescheduled`` event). Notices ``before_window`` fire at T-0
  minus their offset, ``window_start`` rules at T-0. A deploy started with ``tminus run`` has
  no T-0 and none of these (there was nothing to count down to).
- **the start**: T-0, else the deploy's creation. ``during: every D`` updates fire at start +
  D, + 2D, … while the deploy is under way and before the window ends (``window.start +
  duration``, when the plan says).
- **the base time**: the end of the window's last phase when it succeeded (as for success
  metrics, :func:`tminus.engine.success.base_time`). ``after_success`` notices fire at base +
  ``after``; the watch's period *i* measures at base + its start + k × ``every`` for k = 1…
  ``for`` / ``every`` (a period starts where the previous one ended unless it says
  ``start``); a success metric with ``after`` is measured at base + ``after``.

Chains (``during`` updates, watch measurements) are planned one timer at a time: firing one
plans the next (:func:`next_in_chain`), so a week-long watch is one row, not ten thousand.
Every timer's key is its idempotency key: planning again inserts nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tminus.plan.model import Plan
from tminus.plan.values import format_duration
from tminus.states import TERMINAL, DeployState

__all__ = [
    "NOTICE_KINDS",
    "base_time_of",
    "next_in_chain",
    "period_start",
    "plan_timers",
    "scheduled_at",
    "watch_due",
    "window_end",
]

#: Timer kinds that record a notice (a notification rule of the plan).
NOTICE_KINDS = ("notice", "window_start", "during", "after_success")


def _parse(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return None


def scheduled_at(events: list[dict[str, Any]]) -> datetime | None:
    """T-0 of a deploy registered with ``tminus schedule`` (the latest reschedule counts)."""
    at = None
    for e in events:
        if e["type"] in ("deploy.scheduled", "deploy.rescheduled"):
            at = _parse((e.get("data") or {}).get("at")) or at
    return at


def window_end(plan: Plan, t0: datetime | None) -> datetime | None:
    """The end of the window: its start (the plan's, else T-0) plus its duration."""
    w = plan.window
    if w.duration is None:
        return None
    start = t0 or w.start
    if start is None:
        return None
    if start.tzinfo is None:
        from zoneinfo import ZoneInfo

        start = start.replace(tzinfo=ZoneInfo(w.timezone))
    return start + w.duration


def base_time_of(plan: Plan, phase_rows: dict[int, dict[str, Any]]) -> datetime | None:
    """The end of the window's last phase, once it succeeded; None before."""
    last = len(plan.in_window_phases()) - 1
    row = phase_rows.get(last)
    if row is None or row["state"] != "succeeded" or row.get("ended_at") is None:
        return None
    ended = row["ended_at"]
    return ended if isinstance(ended, datetime) else None


def period_start(plan: Plan, period: int) -> timedelta:
    """Where the watch's period ``period`` starts after the base time: its ``start``, else
    where the period before it ended."""
    assert plan.watch is not None
    offset = timedelta()
    for i, p in enumerate(plan.watch.schedule):
        start = p.start if p.start is not None else offset
        if i == period:
            return start
        offset = start + p.for_
    return offset


def watch_due(plan: Plan, base: datetime, period: int, n: int) -> datetime | None:
    """When the watch's period ``period`` takes its ``n``-th measurement (1-based); None past
    the period's end."""
    assert plan.watch is not None
    p = plan.watch.schedule[period]
    if p.every.total_seconds() <= 0 or n * p.every > p.for_:
        return None
    return base + period_start(plan, period) + n * p.every


def _watch_first(plan: Plan, base: datetime) -> list[dict[str, Any]]:
    if plan.watch is None:
        return []
    out = []
    for i, p in enumerate(plan.watch.schedule):
        due = watch_due(plan, base, i, 1)
        if due is None:
            continue
        label = p.label or f"every {format_duration(p.every)} for {format_duration(p.for_)}"
        out.append(
            {
                "key": f"watch:{i}:1",
                "kind": "watch",
                "due_at": due,
                "data": {"period": i, "n": 1, "label": label},
            }
        )
    return out


def plan_timers(
    plan: Plan,
    d: dict[str, Any],
    phase_rows: dict[int, dict[str, Any]],
    events: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every timer the deploy should have now (the first of each chain). Planning again is
    harmless: keys already planned are left alone by the store."""
    state = DeployState(d["state"])
    out: list[dict[str, Any]] = []
    t0 = scheduled_at(events)
    start = t0 or d["created_at"]
    rules = plan.notifications.rules
    ended = state in TERMINAL and state != DeployState.SUCCEEDED
    if t0 is not None and not ended:
        for i, rule in enumerate(rules):
            if rule.when == "before_window" and rule.before is not None:
                shown = f"T-{format_duration(rule.before)}"
                out.append(_notice(f"notice:{i}:{t0.isoformat()}", t0 - rule.before, i, shown))
            elif rule.when == "window_start":
                out.append(
                    _notice(f"window_start:{i}:{t0.isoformat()}", t0, i, "T-0", "window_start")
                )
    if not ended and state != DeployState.SUCCEEDED:
        for i, rule in enumerate(rules):
            if rule.when == "during" and rule.every is not None:
                due = start + rule.every
                out.append(
                    _notice(f"during:{i}:1", due, i, f"T+{format_duration(rule.every)}", "during")
                    | {"data": {"rule": i, "n": 1, "shown": f"T+{format_duration(rule.every)}"}}
                )
    base = base_time_of(plan, phase_rows)
    if base is not None and not ended:
        for i, rule in enumerate(rules):
            if rule.when == "after_success" and rule.after is not None:
                shown = f"success+{format_duration(rule.after)}"
                out.append(
                    _notice(f"after_success:{i}", base + rule.after, i, shown, "after_success")
                )
        out.extend(_watch_first(plan, base))
        for i, m in enumerate(plan.success_metrics):
            if m.after is not None and m.check is not None:
                out.append(
                    {
                        "key": f"metric:{i}",
                        "kind": "metric",
                        "due_at": base + m.after,
                        "data": {"index": i, "name": m.name},
                    }
                )
    return out


def _notice(key: str, due: datetime, rule: int, shown: str, kind: str = "notice") -> dict[str, Any]:
    return {"key": key, "kind": kind, "due_at": due, "data": {"rule": rule, "shown": shown}}


def next_in_chain(
    plan: Plan, timer: dict[str, Any], base: datetime | None, start: datetime, at: datetime
) -> tuple[dict[str, Any] | None, int]:
    """The timer after ``timer`` in its chain (a ``during`` update, a watch measurement),
    the first one due after ``at`` (those missed while no server ran are skipped), and how
    many were skipped. (None, 0) at the chain's end."""
    data = dict(timer.get("data") or {})
    n = int(data.get("n", 1))
    skipped = 0
    if timer["kind"] == "during":
        rule = plan.notifications.rules[int(data["rule"])]
        assert rule.every is not None
        while True:
            n += 1
            due = start + n * rule.every
            if due > at:
                break
            skipped += 1
        shown = f"T+{format_duration(n * rule.every)}"
        return (
            {
                "key": f"during:{data['rule']}:{n}",
                "kind": "during",
                "due_at": due,
                "data": {"rule": data["rule"], "n": n, "shown": shown},
            },
            skipped,
        )
    if timer["kind"] == "watch" and base is not None:
        period = int(data["period"])
        while True:
            n += 1
            due_or_none = watch_due(plan, base, period, n)
            if due_or_none is None:
                return None, skipped
            if due_or_none > at:
                break
            skipped += 1
        return (
            {
                "key": f"watch:{period}:{n}",
                "kind": "watch",
                "due_at": due_or_none,
                "data": {"period": period, "n": n, "label": data.get("label")},
            },
            skipped,
        )
    return None, 0
