"""The saga's rollback: which actions undo what (each phase that started, newest first: its
``rollback:`` steps, then the compensations it still owes), recorded as the deploy's
rollback plan before any runs; running that plan (once per backup restored, under
maintenance for a downtime phase, pausing on an action that was in flight at a crash and is
not safe to repeat); and what it leaves recorded (compensations done, steps and phases
rolled back). Also ``tminus rollback`` of chosen phases."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tminus.engine.attempt import execute
from tminus.engine.maintenance import (
    downtime,
    maintenance,
    maintenance_off_for,
    maintenance_open,
    span_step,
)
from tminus.engine.specs import _rerun_safe, _restores, step_from_spec, step_spec
from tminus.states import DONE_STEP_STATES, DeployState, StepState

if TYPE_CHECKING:
    from tminus.engine.engine import Engine

__all__ = [
    "build_rollback",
    "build_rollback_items",
    "pause_in_flight",
    "rollback_after",
    "rollback_final",
    "rollback_reason",
    "run_rollback",
]


def build_rollback(engine: Engine, failed_phase: int) -> list[dict[str, Any]]:
    """After a failure: the failed phase, then each earlier phase that started and has
    rollback steps or compensations, newest first."""
    return build_rollback_items(engine, range(failed_phase, -1, -1), first_phase=failed_phase)


def build_rollback_items(
    engine: Engine, phases: Iterable[int], first_phase: int | None
) -> list[dict[str, Any]]:
    """For each of ``phases`` (in that order) that started: its ``rollback:`` steps, then
    the compensations it still owes, newest first. A phase with neither is left out,
    except ``first_phase`` (the one that failed)."""
    comps = engine.store.compensations(engine.deploy_id)
    started = engine.store.phase_rows(engine.deploy_id)
    items: list[dict[str, Any]] = []
    for p in phases:
        if p not in started:
            continue
        phase = engine.plan.phases[p]
        pending = [
            c
            for c in comps
            if c["phase"] == p
            and (c["state"] == "pending" or (c["state"] == "armed" and c["partial_ok"]))
        ]
        if p != first_phase and not phase.rollback and not pending:
            continue
        for j, st in enumerate(phase.rollback):
            items.append(
                {
                    "title": st.title(),
                    "phase": p,
                    "comp_id": None,
                    "steps": [step_spec(st)],
                    "key": f"phase/{p}/rollback/{j}",
                }
            )
        for c in reversed(pending):
            items.append(
                {
                    "title": c["title"],
                    "phase": p,
                    "comp_id": c["id"],
                    "steps": c["spec"]["steps"],
                    "key": c["source_key"] + "/undo",
                }
            )
    return items


async def run_rollback(
    engine: Engine,
    reason: str,
    failed_phase: int | None = None,
    final: DeployState = DeployState.ROLLED_BACK,
) -> DeployState:
    d = engine.store.deploy(engine.deploy_id)
    plan_items = d["rollback_plan"]
    if plan_items is None:
        if failed_phase is None:
            phases = engine.store.phase_rows(engine.deploy_id)
            failed_phase = max(phases) if phases else -1
        plan_items = build_rollback(engine, failed_phase)
        engine._set_state(DeployState.ROLLING_BACK, reason, rollback_plan=plan_items)
        engine._notify_rules("rollback", f"{engine.deploy_id} is rolling back: {reason}")
    else:
        engine._set_state(DeployState.ROLLING_BACK, d["reason"] or reason)
    engine.reporter.line(f"rolling back: {len(plan_items)} action(s)")
    rows = engine.store.step_rows(engine.deploy_id)
    all_ok = True
    restored: set[str] = set()  # backups restored by this rollback
    failed_phases: set[int] = set()
    undone: list[str] = []
    turned_on: int | None = None  # the downtime phase maintenance was turned on for
    for n, item in enumerate(plan_items):
        key = str(item.get("row") or f"rollback/{n}")
        row = rows.get(key)
        phase = item["phase"]
        if turned_on is not None and turned_on != phase:
            await maintenance_off_for(engine, None, f"rollback of phase {turned_on + 1} done")
            turned_on = None
        if row is not None and row["state"] in DONE_STEP_STATES:
            restored |= _restores(item["steps"])
            continue
        if downtime(engine, phase) and not maintenance_open(engine):
            on = span_step(engine, "open", phase)
            if on is not None:  # a downtime phase is rolled back under maintenance
                why = f"rolling back downtime phase {phase + 1}"
                if await maintenance(engine, on, why, key, phase):
                    turned_on = phase
        steps = [step_from_spec(s) for s in item["steps"]]
        ok = True
        for k, st in enumerate(steps):
            sub = f"{key}/{k}" if len(steps) > 1 else key
            srow = rows.get(sub)
            if srow is not None and srow["state"] in DONE_STEP_STATES:
                restored |= _restores([item["steps"][k]])
                continue
            again = _restores([item["steps"][k]]) & restored
            if again:
                msg = f"{st.title()}: backup {', '.join(sorted(again))} already restored"
                engine.store.set_step_state(
                    engine.deploy_id, sub, StepState.SKIPPED, title=st.title()
                )
                engine._event("rollback.restore_skipped", msg, key=sub)
                engine.reporter.step(st.title(), "skipped: restored earlier in this rollback")
                continue
            if srow is not None and srow["state"] == "running" and not _rerun_safe(st):
                # In flight when the runner stopped, and not safe to repeat: never guess.
                return pause_in_flight(
                    engine,
                    sub,
                    f"rollback action '{st.title()}' was in flight when the runner stopped "
                    "and is not idempotent: check whether it took effect, then resume with "
                    "--retry-step or --skip-step (the rollback then goes on)",
                )
            if srow is not None and srow["state"] == "running":
                engine._event(
                    "step.rerun",
                    f"re-running idempotent rollback action {st.title()} after a crash",
                    key=sub,
                )
            out = await execute(engine, st, sub, item["phase"], srow, rolling_back=True)
            if engine._interrupted == "unconfirmed":
                return pause_in_flight(engine, sub, out.error or "the action may still run")
            if out.ok:
                restored |= _restores([item["steps"][k]])
            ok = ok and out.ok
        if len(steps) > 1:
            engine.store.set_step_state(
                engine.deploy_id,
                key,
                StepState.SUCCEEDED if ok else StepState.FAILED,
                title=item["title"],
            )
        if item["comp_id"] is not None:
            engine.store.set_compensation_state(item["comp_id"], "done" if ok else "failed")
            if ok and item["key"].endswith("/undo"):
                undone.append(item["key"][: -len("/undo")])
        if not ok:
            failed_phases.add(phase)
        all_ok = all_ok and ok
    await maintenance_off_for(engine, None, "rollback finished")
    state = final if all_ok else DeployState.FAILED
    why = reason if all_ok else f"{reason}; rollback incomplete: see tminus log {engine.deploy_id}"
    for idx, prow in engine.store.phase_rows(engine.deploy_id).items():
        if prow["state"] == "running":
            engine.store.phase_finished(engine.deploy_id, idx, "rolled_back")
    # What the rollback undid shows as rolled back, not as succeeded.
    rows = engine.store.step_rows(engine.deploy_id)
    rolled = sorted({int(i["phase"]) for i in plan_items} - failed_phases)
    engine.store.mark_rolled_back(
        engine.deploy_id,
        steps=[k for k in undone if rows.get(k, {}).get("state") == "succeeded"],
        phases=[p for p in rolled if p >= 0],
    )
    engine._set_state(state, why)
    engine._release_lock()
    return state


def pause_in_flight(engine: Engine, key: str, reason: str) -> DeployState:
    """Pause a rollback on one of its actions (the rollback goes on when resumed)."""
    engine._notify_rules("paused", f"{engine.deploy_id} paused: {reason}")
    engine._set_state(DeployState.PAUSED, reason)
    engine._event("step.crashed", reason, key=key)
    return DeployState.PAUSED


async def rollback_after(engine: Engine, phases: list[int], reason: str) -> DeployState:
    """``tminus rollback``: undo the chosen phases of a deploy that ended (succeeded, is
    waiting for a delayed phase, or was partly rolled back): their rollback steps and
    the compensations still owed, newest phase first, from what was recorded at run
    time. The deploy then ends *rolled_back*."""
    engine.store.set_runner(engine.deploy_id)
    done = sum(1 for e in engine.store.events(engine.deploy_id) if e["type"] == "rollback.plan")
    items = build_rollback_items(engine, sorted(phases, reverse=True), first_phase=None)
    for n, item in enumerate(items):
        item["row"] = f"rollback/g{done + 1}/{n}"
    engine._event(
        "rollback.plan",
        f"{engine.operator} rolls back phase(s) "
        + ", ".join(str(p + 1) for p in sorted(phases))
        + f": {len(items)} action(s)",
        {"phases": [p + 1 for p in sorted(phases)], "actions": len(items)},
    )
    engine._set_state(DeployState.ROLLING_BACK, reason, rollback_plan=items)
    engine._notify_rules("rollback", f"{engine.deploy_id} is rolling back: {reason}")
    return await run_rollback(engine, reason=reason, final=DeployState.ROLLED_BACK)


def rollback_final(d: dict[str, Any]) -> DeployState:
    return DeployState.ABORTED if d["abort_requested"] else DeployState.ROLLED_BACK


def rollback_reason(engine: Engine, d: dict[str, Any]) -> str:
    """Why the rollback under way started (its event), not why it last paused."""
    for e in reversed(engine.store.events(engine.deploy_id)):
        if e["type"] == "deploy.rolling_back" and e["message"]:
            return str(e["message"])
    return str(d["reason"] or "rollback")
