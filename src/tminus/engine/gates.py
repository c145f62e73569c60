"""The gates a forward run stops at: the checklist (automated items run, manual ones
confirmed), the approvals, and before each phase its delay (``after:``, the deploy waits
*scheduled*) and the window (``window.on_overrun`` when the phases left no longer fit)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.engine.maintenance import maintenance_off_for
from tminus.engine.rollback import run_rollback
from tminus.plan.values import format_duration
from tminus.states import DeployState, StepState

if TYPE_CHECKING:
    from tminus.engine.engine import Engine
    from tminus.engine.program import Node

__all__ = ["approvals", "checklist", "overrun", "phase_start"]


async def checklist(engine: Engine, node: Node) -> DeployState | None:
    item = engine.plan.checklist[node.index]

    async def automated(n: Node) -> DeployState | None:
        it = engine.plan.checklist[n.index]
        assert it.check is not None
        engine.reporter.step(f"checklist: {it.item}")
        result = await engine.run_check(it.check)
        engine.reporter.result(result.passed, result.message)
        if not result.passed:
            engine._event("checklist.failed", f"{it.item}: {result.message}", key=n.key)
            return engine._finish_failed(f"checklist item failed: {it.item}: {result.message}")
        return None

    if item.check is not None:
        failed = await automated(node)
        if failed is not None:
            return failed
        engine.store.set_step_state(
            engine.deploy_id, node.key, StepState.SUCCEEDED, title=item.item
        )
        return None
    confirmed = engine.store.confirmations(engine.deploy_id)

    def unconfirmed(it: Any) -> bool:
        return not any(n in confirmed for n in {it.item, it.id} - {None})

    if unconfirmed(item):
        if engine.interactive and engine.prompt is not None and engine.prompt(item.item):
            engine.store.add_confirmation(engine.deploy_id, item.item, engine.operator)
        else:
            # Stop once for all of them: the automated items after this one run now (a
            # failing one fails the deploy; they run again on resume), then every manual
            # item still unconfirmed is listed with the command that confirms it.
            later = [n for n in engine.program if n.kind == "checklist" and n.index > node.index]
            pending = [item.item]
            for n in later:
                it = engine.plan.checklist[n.index]
                if it.check is not None:
                    failed = await automated(n)
                    if failed is not None:
                        return failed
                elif unconfirmed(it):
                    pending.append(it.item)
            cmd = f"tminus resume {engine.deploy_id}"
            if len(pending) == 1:
                why = (
                    f"checklist item needs confirmation: {item.item} "
                    f'({cmd} --confirm "{item.item}")'
                )
            else:
                why = f"{len(pending)} checklist items need confirmation:" + "".join(
                    f'\n  {p}: {cmd} --confirm "{p}"' for p in pending
                )
                why += f"\n  all at once: {cmd}" + "".join(f' --confirm "{p}"' for p in pending)
            engine._set_state(DeployState.AWAITING_CONFIRMATION, why)
            return DeployState.AWAITING_CONFIRMATION
    engine.store.set_step_state(engine.deploy_id, node.key, StepState.SUCCEEDED, title=item.item)
    return None


def approvals(engine: Engine, node: Node) -> DeployState | None:
    given = {
        a["role"] for a in engine.store.approvals(engine.deploy_id) if a["gate"] == "approvals"
    }
    missing = [r for r in engine.plan.approvals.required if r not in given]
    if missing:
        engine._notify_rules(
            "approval_needed", f"{engine.deploy_id} needs approval by {', '.join(missing)}"
        )
        engine._set_state(
            DeployState.AWAITING_APPROVAL,
            f"waiting for approval by {', '.join(missing)} "
            f"(tminus approve {engine.deploy_id} --role ROLE --as NAME)",
        )
        return DeployState.AWAITING_APPROVAL
    engine.store.set_step_state(engine.deploy_id, node.key, StepState.SUCCEEDED, title="Approvals")
    return None


async def phase_start(engine: Engine, node: Node) -> DeployState | None:
    phase = engine.plan.phases[node.phase]
    if phase.after is not None and node.phase > 0:
        prev = engine.store.phase_rows(engine.deploy_id).get(node.phase - 1)
        ended = prev["ended_at"] if prev else None
        if ended is not None:
            due = ended + phase.after
            if now() < due:
                await maintenance_off_for(
                    engine, None, "the deploy waits for a delayed phase", keep_ok=True
                )
                engine._set_state(
                    DeployState.SCHEDULED,
                    f"phase '{phase.name}' is due at {due:%Y-%m-%d %H:%M:%S %Z}",
                    due_at=due,
                )
                engine._release_lock()
                return DeployState.SCHEDULED
    overran = await overrun(engine, node)
    if overran is not None:
        return overran
    est = phase.estimate.total_seconds() if phase.estimate else None
    engine.reporter.phase(node.phase, len(engine.plan.phases), phase.name, est)
    engine.store.phase_started(engine.deploy_id, node.phase, phase.name, est)
    engine.store.set_step_state(engine.deploy_id, node.key, StepState.SUCCEEDED, title=phase.name)
    engine._notify_rules("phase_start", f"phase '{phase.name}' started")
    return None


async def overrun(engine: Engine, node: Node) -> DeployState | None:
    """Before a phase of the window starts: do the estimates of the phases left still fit
    before the window ends? If not, apply ``window.on_overrun`` (recorded as
    ``window.overrun`` and notified): pause (once: resuming goes on past it), roll back,
    or continue. A deploy started with ``--outside-window`` has no window to keep."""
    from zoneinfo import ZoneInfo

    w = engine.plan.window
    in_window = engine.plan.in_window_phases()
    if w.start is None or w.duration is None or node.phase >= len(in_window):
        return None
    events = engine.store.events(engine.deploy_id)
    if any(e["type"] == "deploy.outside_window" for e in events):
        return None
    if any(e["type"] == "window.overrun" and e["key"] == node.key for e in events):
        return None  # paused on it once; the operator resumed
    start = w.start if w.start.tzinfo else w.start.replace(tzinfo=ZoneInfo(w.timezone))
    end = start + w.duration
    left = sum((p.estimate or timedelta() for p in in_window[node.phase :]), timedelta())
    if now() + left <= end:
        return None
    zone = ZoneInfo(w.timezone)
    reason = (
        f"window overrun: the phases left from '{in_window[node.phase].name}' need "
        f"{format_duration(left)} by their estimates, and the window ends at "
        f"{end.astimezone(zone):%Y-%m-%d %H:%M %Z} (on_overrun: {w.on_overrun})"
    )
    engine._event("window.overrun", reason, {"action": w.on_overrun}, key=node.key)
    engine._notify_rules("failure", f"{engine.deploy_id}: {reason}")
    engine.reporter.line(reason)
    if w.on_overrun == "continue":
        return None
    if w.on_overrun == "pause":
        engine._set_state(DeployState.PAUSED, f"{reason}; resume to go on anyway, or --rollback")
        return DeployState.PAUSED
    started = engine.store.phase_rows(engine.deploy_id)
    return await run_rollback(engine, reason=reason, failed_phase=max(started) if started else None)
