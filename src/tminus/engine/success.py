"""Success metrics: when they are measured, and what was found.

The *base time* is the end of the last phase of the window (the last phase before the first
delayed one; the last phase when none is delayed). A metric with a ``check`` and no ``after``
is measured by the engine right then (the success summary node of the program). A metric
with ``after: D`` is *pending* until base + D: the summary records it (``metric.scheduled``,
with its due time) and nothing measures it earlier. Once due, ``tminus resume DEPLOY``
measures it (``metric.measured``), whatever state the deploy is in by then: succeeded,
scheduled for a later delayed phase (the metric never waits for that phase), paused. ``tminus
due`` lists pending metrics with their due time, as it lists delayed phases; ``tminus serve``
resumes the deploy when one is due (a ``metric`` timer), and without a server cron (or a
person) runs ``tminus due`` and resumes what is due.

A pending metric of a deploy that was rolled back, failed or was aborted is never measured
(it is shown *cancelled*): it would measure the version that was undone.

Results inform; they never change a deploy's state.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.engine.specs import _jsonable
from tminus.plan.values import format_duration
from tminus.states import TERMINAL, DeployState

if TYPE_CHECKING:
    from tminus.engine.engine import Engine
    from tminus.plan.model import Plan, SuccessMetric
    from tminus.sources.base import CheckResult

__all__ = [
    "CANCELLING_STATES",
    "base_time",
    "measure_due",
    "metric_record",
    "metric_states",
    "pending_metrics",
    "scheduled_record",
]

#: Deploy states in which a pending metric is dropped rather than measured.
CANCELLING_STATES = TERMINAL - {DeployState.SUCCEEDED}


def base_time(plan: Plan, phase_rows: dict[int, dict[str, Any]]) -> datetime:
    """The end of the last phase of the window (now, if it has no recorded end)."""
    last = len(plan.in_window_phases()) - 1
    row = phase_rows.get(last)
    ended = row["ended_at"] if row else None
    return ended if isinstance(ended, datetime) else now()


def metric_record(
    index: int, metric: SuccessMetric, result: CheckResult, due: datetime | None
) -> dict[str, Any]:
    """What is recorded of one measurement (``metric.measured`` and the ``summary`` event)."""
    at = now()
    return {
        "index": index,
        "name": metric.name,
        "status": result.status,
        "level": result.level,
        "value": _jsonable(result.value),
        "message": result.message,
        "target": metric.target,
        "due_at": due.isoformat() if due is not None else None,
        "measured_at": at.isoformat(),
        "late_s": round((at - due).total_seconds(), 3) if due is not None else None,
    }


def scheduled_record(index: int, metric: SuccessMetric, base: datetime) -> dict[str, Any]:
    assert metric.after is not None
    return {
        "index": index,
        "name": metric.name,
        "target": metric.target,
        "after_s": metric.after.total_seconds(),
        "base_at": base.isoformat(),
        "due_at": (base + metric.after).isoformat(),
    }


def metric_states(
    plan: Plan | None, events: list[dict[str, Any]], deploy_state: str
) -> list[dict[str, Any]]:
    """Per success metric of the plan, what is known: ``measured`` (with the result),
    ``pending`` (with its due time), ``cancelled`` (pending when the deploy was rolled back,
    failed or aborted), ``not yet`` (the window's last phase has not ended), or ``no check``
    (nothing measures it: it is for people)."""
    from tminus.store.events import metric_records

    scheduled, measured = metric_records(events)
    out: list[dict[str, Any]] = []
    for i, m in enumerate(plan.success_metrics if plan is not None else []):
        item: dict[str, Any] = {
            "index": i,
            "name": m.name,
            "target": m.target,
            "after_s": m.after.total_seconds() if m.after is not None else None,
            "due_at": None,
        }
        if m.check is None:
            item["state"] = "no check"
        elif i in measured:
            item |= measured[i] | {"state": "measured"}
        elif i in scheduled:
            item["due_at"] = scheduled[i]["due_at"]
            item["state"] = "cancelled" if deploy_state in CANCELLING_STATES else "pending"
        else:
            item["state"] = "not yet"
        if isinstance(item.get("due_at"), str):
            item["due_at"] = datetime.fromisoformat(item["due_at"])
        out.append(item)
    return out


def pending_metrics(
    plan: Plan | None, events: list[dict[str, Any]], deploy_state: str
) -> list[dict[str, Any]]:
    """The metrics still to measure, each with ``due_at`` and ``is_due``."""
    t = now()
    return [
        m | {"is_due": m["due_at"] <= t}
        for m in metric_states(plan, events, deploy_state)
        if m["state"] == "pending"
    ]


async def measure_due(engine: Engine) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure the deploy's pending metrics that are due (``metric.measured`` each). Returns
    (what was measured, what is still pending)."""
    d = engine.store.deploy(engine.deploy_id)
    pending = pending_metrics(engine.plan, engine.store.events(engine.deploy_id), d["state"])
    done: list[dict[str, Any]] = []
    for p in pending:
        if not p["is_due"]:
            continue
        metric = engine.plan.success_metrics[p["index"]]
        assert metric.check is not None
        result = await engine.run_check(metric.check)
        record = metric_record(p["index"], metric, result, p["due_at"])
        engine._event(
            "metric.measured",
            f"{metric.name}: {result.status}: {result.message} (due "
            f"{p['due_at']:%Y-%m-%d %H:%M:%S %Z}, {format_duration(metric.after)} after the "
            "window's last phase)",
            record,
            key=f"metric/{p['index']}",
        )
        engine.reporter.result(result.passed, f"{metric.name}: {result.message}")
        done.append(record)
    left = [p for p in pending if not p["is_due"]]
    return done, left


def describe_pending(deploy_id: str, pending: list[dict[str, Any]]) -> str:
    """For a final line: the metrics still pending, with their due times."""
    if not pending:
        return ""
    items = ", ".join(f"{p['name']} at {p['due_at']:%Y-%m-%d %H:%M:%S %Z}" for p in pending)
    return (
        f"; {len(pending)} success metric(s) pending: {items} "
        f"(tminus resume {deploy_id} measures them once due; tminus due lists them)"
    )
