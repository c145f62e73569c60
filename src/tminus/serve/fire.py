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

A notice's messages are recorded in the outbox (one per channel of its rule), with a
``notify`` event; they are then delivered by the server's outbox pass
(:func:`tminus.engine.delivery.deliver_due`), which records what each receiver answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tminus.engine.notify import rule_rows
from tminus.plan.interpolate import Resolver
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
    #: Messages to record in the outbox (:func:`tminus.engine.notify.rule_rows`), with the
    #: ``notify`` event's text and data.
    outbox: list[dict[str, Any]] = field(default_factory=list)
    notice: tuple[str, dict[str, Any]] | None = None


def _late(timer: dict[str, Any], at: datetime) -> float:
    due: datetime = timer["due_at"]
    return max(0.0, (at - due).total_seconds())


def _said_late(late: float) -> str:
    return f", {format_duration(timedelta(seconds=round(late)))} late" if late > LATE_S else ""


def _resolver(plan: Plan, d: dict[str, Any]) -> Resolver:
    from tminus.engine.prepare import make_resolver
    from tminus.engine.program import split_overrides

    overrides, _ = split_overrides(d["overrides"])
    return make_resolver(plan, d["plan_path"], d["id"], "tminus-serve", overrides, Path(".tminus"))


def _window_facts(plan: Plan, t0: datetime | None) -> dict[str, str]:
    """The window a notice is about (a status page's scheduled maintenance needs it)."""
    start = t0 or plan.window.start
    if start is None:
        return {}
    if start.tzinfo is None:
        from zoneinfo import ZoneInfo

        start = start.replace(tzinfo=ZoneInfo(plan.window.timezone))
    out = {"window_start": start.isoformat()}
    end = window_end(plan, t0)
    if end is not None:
        out["window_end"] = end.isoformat()
    return out


def _default_text(plan: Plan, d: dict[str, Any], timer: dict[str, Any], t0: datetime | None) -> str:
    fmt = _DEFAULT_TEXT.get(timer["kind"], "{shown}: {plan}")
    return fmt.format(
        shown=(timer.get("data") or {}).get("shown", ""),
        plan=plan.name,
        env=plan.environment,
        t0=f"{t0:%Y-%m-%d %H:%M %Z}" if isinstance(t0, datetime) else "?",
        state=d["state"],
    )


def _notice(
    plan: Plan,
    d: dict[str, Any],
    timer: dict[str, Any],
    at: datetime,
    events: list[Any],
    link: str | None = None,
    phase_rows: dict[int, dict[str, Any]] | None = None,
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
    resolver = _resolver(plan, d)
    text = _default_text(plan, d, timer, t0)
    context: dict[str, Any] = {"started_by": d["started_by"]}
    phase = None
    if kind == "during" and phase_rows is not None:
        # An update during the deploy says where it is: its phase, ETA and downtime so far.
        from tminus.engine.messages import engine_context

        context |= engine_context(plan, phase_rows, {}, "")
        running = [r for _, r in sorted(phase_rows.items()) if r.get("state") == "running"]
        phase = str(running[-1]["name"]) if running else None
    if link:
        context["deploy"] = {"link": link}
    rows = rule_rows(
        plan,
        d["id"],
        rule.when,
        text,
        occurrence=timer["key"],
        resolver=resolver,
        state=d["state"],
        phase=phase,
        rules=[int(data["rule"])],
        title=f"{data.get('shown', '')}: {plan.name} ({plan.environment})",
        facts=_window_facts(plan, t0) | {"due": timer["due_at"].isoformat()},
        context=context,
    )
    shown = rows[0]["message"]["text"] if rows else resolver.mask(text)
    record = {
        "when": rule.when,
        "channels": [r["channel"] for r in rows],
        "queued": len(rows),
        "keys": [r["key"] for r in rows],
        "timer": timer["key"],
        "due_at": timer["due_at"].isoformat(),
        "late_s": round(late, 3),
    }
    firing = Firing("done", f"queued {len(rows)} message(s){_said_late(late)}")
    firing.outbox, firing.notice = rows, (shown, record)
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
    warn = rnd.warn if plan.watch.on_warn == "notify" else []
    for when, found in (("watch_warn", warn), ("watch_critical", rnd.critical)):
        if not found:
            continue
        level = "CRITICAL" if when == "watch_critical" else "WARN"
        firing.events.append(
            (f"watch.{level.lower()}", f"watch: {level}: " + "; ".join(found), {"checks": found})
        )
        text = f"{plan.name}: watch {level}: " + "; ".join(found)
        rows = rule_rows(
            plan,
            d["id"],
            when,
            text,
            occurrence=timer["key"],
            resolver=_resolver(plan, d),
            severity="critical" if level == "CRITICAL" else "warning",
            state=d["state"],
        )
        if rows:
            firing.outbox += rows
            channels = list(dict.fromkeys(r["channel"] for r in rows))
            keys = [r["key"] for r in rows]
            firing.notice = (
                text,
                {"when": when, "channels": channels, "queued": len(rows), "keys": keys},
            )
    if rnd.critical and plan.watch.on_critical == "rollback":
        reason = "watch CRITICAL: " + "; ".join(rnd.critical)
        firing.drive = (f"rollback:{timer['key']}", ["rollback", d["id"], "--reason", reason])
        firing.outcome += "; CRITICAL: rolling back"
    elif rnd.critical and plan.watch.on_critical == "operation" and plan.watch.operation:
        name = plan.watch.operation
        reason = f"watch CRITICAL on {d['id']}: " + "; ".join(rnd.critical)
        firing.drive = (
            f"operation:{timer['key']}",
            ["op", "run", d["plan_path"], name, "--yes", "--reason", reason],
        )
        firing.outcome += f"; CRITICAL: running operation {name}"
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
    link: str | None = None,
    phase_rows: dict[int, dict[str, Any]] | None = None,
) -> Firing:
    """Fire ``timer`` of deploy row ``d`` (its plan loaded) at ``at``; ``link``: the deploy's
    page on the dashboard, for notices; ``phase_rows``: its phases' records (a ``during``
    update tells the phase, ETA and downtime so far from them)."""
    kind = timer["kind"]
    if kind in ("notice", "window_start", "during", "after_success"):
        if d["state"] in _ENDED and kind != "after_success":
            return Firing("skipped", f"the deploy is {d['state']}")
        return _notice(plan, d, timer, at, events, link, phase_rows)
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
