"""The operator's answer on resume (``--retry-step``, ``--skip-step``): to the forward step that
failed or was interrupted (skipping one that was in flight makes its undo owed), or to the
rollback action that was in flight when the runner stopped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tminus.errors import NotResumable
from tminus.states import DONE_STEP_STATES, StepState

if TYPE_CHECKING:
    from tminus.engine.engine import Engine

__all__ = ["apply_resume_action", "apply_rollback_action", "owe_undo"]


def apply_resume_action(engine: Engine, action: str, rows: dict[str, dict[str, Any]]) -> None:
    for node in engine.program:
        row = rows.get(node.key)
        if row is None or row["state"] in DONE_STEP_STATES:
            continue
        if row["state"] in ("failed", "running", "waiting"):
            if action == "skip":
                if row["state"] == "running":
                    owe_undo(engine, node.key)
                engine.store.set_step_state(
                    engine.deploy_id, node.key, StepState.SKIPPED, title=engine._text(node.title)
                )
                engine._event(
                    "operator.skip",
                    f"{engine.operator} skipped {engine._text(node.title)}",
                    key=node.key,
                )
            else:
                engine.store.set_step_state(
                    engine.deploy_id, node.key, "retry", title=engine._text(node.title)
                )
                engine._event(
                    "operator.retry",
                    f"{engine.operator} retries {engine._text(node.title)}",
                    key=node.key,
                )
            return
    raise NotResumable(f"there is no failed or interrupted step to {action}")


def apply_rollback_action(engine: Engine, action: str) -> None:
    """``--retry-step``/``--skip-step`` on a rollback that paused on an action that was in
    flight when the runner stopped."""
    rows = engine.store.step_rows(engine.deploy_id)
    inflight = [k for k, r in rows.items() if k.startswith("rollback/") and r["state"] == "running"]
    if not inflight:
        raise NotResumable(f"the rollback has no interrupted action to {action}")
    for key in inflight:
        title = rows[key]["title"]
        if action == "skip":
            engine.store.set_step_state(engine.deploy_id, key, StepState.SKIPPED, title=title)
            engine._event("operator.skip", f"{engine.operator} skipped {title}", key=key)
        else:
            engine.store.set_step_state(engine.deploy_id, key, "retry", title=title)
            engine._event("operator.retry", f"{engine.operator} retries {title}", key=key)


def owe_undo(engine: Engine, key: str) -> None:
    """``--skip-step`` on a step that was in flight at a crash says its effect took place
    (the pause asks the operator to check): its undo is owed, so a later rollback runs it.
    (Skipping a step that *failed* leaves its undo void, as the failure left it.)"""
    for comp in engine.store.compensations(engine.deploy_id):
        if comp["source_key"] == key and comp["state"] == "armed":
            engine.store.set_compensation_state(comp["id"], "pending")
