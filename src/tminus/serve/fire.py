"""Fire one claimed timer: what it records, what it plans next, which run it asks for.

The late policy (a timer fired more than :data:`LATE_S` after its due time, usually because
no server ran) is per kind, and always said in the outcome and the event:

=================  =========================================================================
``notice``         T-48h/T-24h/T-1h: recorded late while T-0 is still ahead; skipped once
                   T-0 has passed (a "starts in 24 hours" notice after the start is wrong).
``window_start``   recorded late while the window is open; skipped after its end.
``during``         the newest one is recorded; those missed in between are skipped (counted).
``after_success``  recorded late.
``watch``          one measurement now; the measurements missed in between are skipped
                   (counted), the cadence continues from now.
``metric``         measured late (``tminus resume`` records how late).
=================  =========================================================================

Notices are recorded as ``notify`` events with the rule's channels and ``"sent": []``: no
notifier sends to channels yet, and nothing here says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tminus.plan.model import Plan
from tminus.plan.values import format_duration
from tminus.serve.planner import next_in_chain, period_start, scheduled_at, window_end
from tminus.serve.watch import measure_round
from tminus.states import DeployState

__all__ = ["LATE_S", "Firing", "fire"]

#: A timer fired later than this after its due time is *late* (said, and counted).
LATE_S = 5.0

_DEFAULT_TEXT = {
    "notice": "{shown}: {plan} ({env}) starts at {t0}",
    "window_start": "T-0: the window of {plan} ({env}) opens now",
    "during": "{shown}: {plan} ({env}) is {state}",
    "after_success": "{shown}: {plan} ({env}) succeeded; watching",
}


@dataclass
class Firing:
    """The result of firing a timer: its final state and outcome, the events recorded with it
    (in the same transaction), the timers it plans next, and a run it asks for."""

    state: str
    outcome: str
    events: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    follow: list[dict[str, Any]] = field(default_factory=list)
    #: (claim key, CLI arguments) of a worker run: ``resume`` or ``rollback``.
    drive: tuple[str, list[str]] | None = None


def _late(timer: dict[str, Any], at: datetime) -> float:
    due: datetime = timer["due_at"]
    return max(0.0, (at - due).total_seconds())


def _said_late(late: float) -> str:
    return f", {format_duration(timedelta(seconds=round(late)))} late" if late > LATE_S else ""


def _notice_text(
    plan: Plan, d: dict[str, Any], timer: dict[str, Any], rule: Any, t0: datetime | None
) -> str:
    fmt = _DEFAULT_TEXT.get(timer["kind"], "{shown}: {plan}")
    default = fmt.format(
        shown=(timer.get("data") or {}).get("shown", ""),
        plan=plan.name,
        env=plan.environment,
        t0=f"{t0:%Y-%m-%d %H:%M %Z}" if isinstance(t0, datetime) else "?",
        state=d["state"],
    )
    if not rule.message:
        return default
    from tminus.engine.prepare import make_resolver
    from tminus.engine.program import split_overrides

    try:
        overrides, _ = split_overrides(d["overrides"])
        resolver = make_resolver(
            plan, d["plan_path"], d["id"], "tminus-serve", overrides, Path(".tminus")
        )
        return resolver.mask(resolver.resolve(rule.message))
    except Exception:  # a message that does not resolve is shown as written
        return str(rule.message)


def _notice(
    plan: Plan, d: dict[str, Any], timer: dict[str, Any], at: datetime, events: list[Any]
) -> Firing:
    data = timer.get("data") or {}
    rule = plan.notifications.rules[int(data["rule"])]
    late = _late(timer, at)
    state = DeployState(d["state"])
    t0 = scheduled_at(events)
    kind = timer["kind"]
    skip = None
    if kind == "notice" and t0 is not None and at >= t0 and late > LATE_S:
        skip = "missed while no server ran, and T-0 has passed"
    elif kind == "window_start":
        end = window_end(plan, t0)
        if late > LATE_S and end is not None and at > end:
            skip = "missed while no server ran, and the window has closed"
    elif kind == "during" and (state == DeployState.SUCCEEDED or state.value in _ENDED):
        skip = f"the deploy is {state.value}: no more updates during it"
    elif kind == "during":
        end = window_end(plan, t0)
        if end is not None and at > end:
            skip = "the window has closed"
    if skip is not None:
        return Firing("skipped", skip, [("notify.skipped", f"{data.get('shown')}: {skip}", None)])
    text = _notice_text(plan, d, timer, rule, t0)
    channels = rule.channels or list(plan.notifications.channels)
    record = {
        "when": rule.when,
        "channels": channels,
        "sent": [],
        "timer": timer["key"],
        "due_at": timer["due_at"].isoformat(),
        "late_s": round(late, 3),
    }
    outcome = f"recorded{_said_late(late)}; not sent (no notifier)"
    firing = Firing("done", outcome, [("notify", text, record)])
    if kind == "during":
        start = t0 or d["created_at"]
        nxt, skipped = next_in_chain(plan, timer, None, start, at)
        if nxt is not None:
            firing.follow.append(nxt)
        if skipped:
            firing.outcome += f"; {skipped} missed update(s) skipped"
    return firing


_ENDED = {"rolled_back", "failed", "aborted"}


async def _watch(
    plan: Plan,
    d: dict[str, Any],
    timer: dict[str, Any],
    at: datetime,
    base: datetime | None,
    state_dir: Path,
    notices: list[Any],
) -> Firing:
    data = timer.get("data") or {}
    period, n = int(data["period"]), int(data["n"])
    if d["state"] in _ENDED or base is None:
        return Firing(
            "skipped",
            f"the deploy is {d['state']}: the watch ended",
            [("watch.ended", f"watch ended: the deploy is {d['state']}", None)],
        )
    assert plan.watch is not None
    late = _late(timer, at)
    p = plan.watch.schedule[period]
    offset = period_start(plan, period)
    if at > base + offset + p.for_ + p.every:  # the whole period passed, no server ran
        events: list[tuple[str, str, dict[str, Any] | None]] = []
        if period == len(plan.watch.schedule) - 1:
            events.append(("watch.ended", "the watch's schedule is over", None))
        return Firing("skipped", "missed while no server ran: the period is over", events)
    rnd = await measure_round(plan, d, period, n, state_dir)
    firing = Firing("done", f"measured{_said_late(late)}", list(rnd.events))
    nxt, skipped = next_in_chain(plan, timer, base, base, at)
    if skipped:
        firing.outcome += f"; {skipped} missed measurement(s) skipped"
    if nxt is not None:
        firing.follow.append(nxt)
    elif period == len(plan.watch.schedule) - 1:
        firing.events.append(("watch.ended", "the watch's schedule is over", None))
    for when, found in (("watch_warn", rnd.warn), ("watch_critical", rnd.critical)):
        if not found:
            continue
        level = "CRITICAL" if when == "watch_critical" else "WARN"
        firing.events.append(
            (f"watch.{level.lower()}", f"watch: {level}: " + "; ".join(found), {"checks": found})
        )
        for rule in plan.notifications.rules:
            if rule.when == when:
                channels = rule.channels or list(plan.notifications.channels)
                text = f"{plan.name}: watch {level}: " + "; ".join(found)
                firing.events.append(
                    ("notify", text, {"when": when, "channels": channels, "sent": []})
                )
    if rnd.critical and plan.watch.on_critical == "rollback":
        reason = "watch CRITICAL: " + "; ".join(rnd.critical)
        firing.drive = (f"rollback:{timer['key']}", ["rollback", d["id"], "--reason", reason])
        firing.outcome += "; CRITICAL: rolling back"
    return firing


async def fire(
    plan: Plan,
    d: dict[str, Any],
    timer: dict[str, Any],
    *,
    at: datetime,
    base: datetime | None,
    events: list[dict[str, Any]],
    state_dir: Path,
) -> Firing:
    """Fire ``timer`` of deploy row ``d`` (its plan loaded) at ``at``."""
    kind = timer["kind"]
    if kind in ("notice", "window_start", "during", "after_success"):
        if d["state"] in _ENDED and kind != "after_success":
            return Firing("skipped", f"the deploy is {d['state']}")
        return _notice(plan, d, timer, at, events)
    if kind == "watch":
        return await _watch(plan, d, timer, at, base, state_dir, events)
    if kind == "metric":
        if d["state"] in _ENDED:
            return Firing("skipped", f"the deploy is {d['state']}: the metric is not measured")
        idx = int((timer.get("data") or {}).get("index", 0))
        late = _late(timer, at)
        return Firing(
            "done",
            f"measuring{_said_late(late)}",
            drive=(f"metric:{idx}", ["resume", d["id"], "--quiet"]),
        )
    return Firing("skipped", f"unknown timer kind {kind!r}")
