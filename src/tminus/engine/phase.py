"""A phase's work nodes: each step (re-run or pause after a crash, then its outcome: wait,
pause, abort, a rollback trigger, failure), its ``verify`` checks, its end, and the phase's
failure policy (continue, pause or roll back); and the success summary at the end of the
window's last phase."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.engine.attempt import execute
from tminus.engine.maintenance import maintenance_off_for
from tminus.engine.rollback import run_rollback
from tminus.engine.specs import _jsonable, _rerun_safe
from tminus.engine.triggers import abort_wants_rollback, on_trigger
from tminus.plan.values import format_duration
from tminus.states import DeployState, StepState

if TYPE_CHECKING:
    from tminus.engine.engine import Engine
    from tminus.engine.program import Node
    from tminus.plan.model import Phase

__all__ = ["failure", "phase_end", "step_node", "summary", "verify"]


async def step_node(engine: Engine, node: Node, row: dict[str, Any] | None) -> DeployState | None:
    step = engine._step_of(node)
    if row is not None and row["state"] == "failed":
        # The failure was recorded but its policy was not (a crash in between): apply it,
        # never re-run the step.
        return await failure(engine, node, row["error"] or "failed")
    if row is not None and row["state"] == "running":
        if not _rerun_safe(step):
            return engine._pause(
                node,
                f"step '{engine._text(node.title)}' was in flight when the runner stopped "
                "and is not idempotent: check whether it took effect, then resume with "
                "--retry-step, "
                "--skip-step or --rollback",
                crashed=True,
            )
        engine._event(
            "step.rerun",
            f"re-running idempotent step {engine._text(node.title)} after a crash",
            key=node.key,
        )
    outcome = await execute(engine, step, node.key, node.phase, row)
    if engine._interrupted == "unconfirmed":
        return engine._pause(node, outcome.error or "the step's work may still be running")
    if engine._interrupted == "abort":
        return await engine.abort(rollback=abort_wants_rollback(engine))
    if engine._interrupted == "trigger" or (outcome.ok and engine._fired is not None):
        fired = await on_trigger(engine, node)
        if fired is not None:
            return fired
    if outcome.waiting:
        engine._set_state(DeployState.AWAITING_APPROVAL, outcome.waiting)
        engine._notify_rules("approval_needed", f"{engine.deploy_id}: {outcome.waiting}")
        return DeployState.AWAITING_APPROVAL
    if outcome.pause:  # no verdict (missing data): pause, whatever on_failure says
        if engine.store.abort_requested(engine.deploy_id):  # a canary's hold saw it first
            return await engine.abort(rollback=abort_wants_rollback(engine))
        return engine._pause(node, f"{engine._text(node.title)}: {outcome.pause}")
    if outcome.ok:
        return None
    return await failure(engine, node, outcome.error or "failed")


async def verify(engine: Engine, node: Node) -> DeployState | None:
    phase = engine.plan.phases[node.phase]
    ref = phase.verify[node.index]
    row = engine.store.step_rows(engine.deploy_id).get(node.key)
    if row is not None and row["state"] == "failed":
        return await failure(engine, node, row["error"] or "failed")
    engine.reporter.step(f"verify: {engine._text(node.title)}")
    engine.store.step_started(
        engine.deploy_id,
        node.key,
        title=engine._text(node.title),
        kind="verify",
        step_id=None,
        attempts=1,
    )
    result = await engine.run_check(ref)
    engine.reporter.result(result.passed, result.message)
    data = {"status": result.status, "level": result.level, "value": _jsonable(result.value)}
    if result.passed:
        state = StepState.WARNED if result.level == "warn" else StepState.SUCCEEDED
        engine.store.step_finished(
            engine.deploy_id, node.key, state=state.value, output=result.message, event_data=data
        )
        if result.level == "warn":
            engine._notify_rules("watch_warn", f"WARN {result.name}: {result.message}")
        return None
    engine.store.step_finished(
        engine.deploy_id, node.key, state="failed", error=result.message, event_data=data
    )
    if result.status == "inconclusive":
        return engine._pause(node, f"verify '{result.name}' is inconclusive: {result.message}")
    return await failure(engine, node, f"verify '{result.name}' failed: {result.message}")


async def phase_end(engine: Engine, node: Node) -> DeployState | None:
    phase = engine.plan.phases[node.phase]
    await maintenance_off_for(engine, node.phase, "the phase ended")
    engine.store.phase_finished(engine.deploy_id, node.phase, "succeeded")
    engine.store.set_step_state(engine.deploy_id, node.key, StepState.SUCCEEDED, title=phase.name)
    engine._notify_rules("phase_end", f"phase '{phase.name}' completed")
    return None


async def failure(engine: Engine, node: Node, error: str) -> DeployState | None:
    phase: Phase = engine.plan.phases[node.phase]
    engine.store.set_deploy(engine.deploy_id, fault_at=now())
    engine._notify_rules(
        "failure", f"{engine.deploy_id}: {engine._text(node.title)} failed: {error}"
    )
    if phase.on_failure == "continue":
        engine.store.set_step_state(
            engine.deploy_id, node.key, StepState.IGNORED, title=engine._text(node.title)
        )
        engine._event(
            "step.ignored",
            f"{engine._text(node.title)} failed, continuing: {error}",
            key=node.key,
        )
        return None
    if phase.on_failure == "pause":
        return engine._pause(node, f"{engine._text(node.title)} failed: {error}")
    return await run_rollback(
        engine, reason=f"{engine._text(node.title)} failed: {error}", failed_phase=node.phase
    )


async def summary(engine: Engine, node: Node) -> DeployState | None:
    """At the end of the window's last phase: the success metrics without ``after`` are
    measured now; those with ``after`` are scheduled (see :mod:`tminus.engine.success`)."""
    from tminus.engine.success import base_time, metric_record, scheduled_record

    engine.reporter.step("success summary")
    base = base_time(engine.plan, engine.store.phase_rows(engine.deploy_id))
    results = []
    pending = []
    for i, m in enumerate(engine.plan.success_metrics):
        if m.check is None:
            continue
        if m.after is not None and m.after.total_seconds() > 0:
            pending.append(scheduled_record(i, m, base))
            continue
        r = await engine.run_check(m.check)
        results.append(metric_record(i, m, r, None))
        engine.reporter.result(r.passed, f"{m.name}: {r.message}")
    engine._event("summary", "success metrics", {"metrics": results, "pending": pending})
    for rec in pending:
        after = timedelta(seconds=rec["after_s"])
        msg = (
            f"{rec['name']}: to be measured at {base + after:%Y-%m-%d %H:%M:%S %Z}, "
            f"{format_duration(after)} after the window's last phase ended"
        )
        engine.reporter.line(msg)
        engine._event("metric.scheduled", msg, rec, key=f"metric/{rec['index']}")
    engine._notify_rules("success", f"{engine.deploy_id} succeeded")
    engine.store.set_step_state(engine.deploy_id, node.key, StepState.SUCCEEDED, title="summary")
    return None
