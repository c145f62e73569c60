"""Step and phase records of a deploy, their rollback marks, and the compensations armed
before steps run (``steps``, ``phases`` and ``compensations`` tables)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select, update

from tminus.clock import now
from tminus.store import schema as t
from tminus.store._driver import driver_tx, prepared
from tminus.store._rows import _row
from tminus.store.events import EventsMixin
from tminus.store.runners import _delete_processes, _driver_delete_processes

__all__ = ["StepsMixin"]

# Statements of the per-step hot path: sent through the driver (tminus.store._driver).
_INSERT_STEP = insert(t.steps)
_STEP_KEYS = ("deploy_id", "key", "title", "kind", "state", "attempts", "started_at", "step_id")
_STEP_WHERE = (t.steps.c.deploy_id == bindparam("d"), t.steps.c.key == bindparam("k"))
_START_STEP = (
    update(t.steps)
    .where(*_STEP_WHERE)
    .values(
        state="running",
        started_at=bindparam("ts"),
        ended_at=None,
        attempts=bindparam("attempts"),
        error=None,
    )
)
_FINISH_STEP = (
    update(t.steps)
    .where(*_STEP_WHERE)
    .values(
        state=bindparam("state"),
        ended_at=bindparam("ts"),
        output=bindparam("output"),
        error=bindparam("error"),
        artifacts=bindparam("artifacts"),
    )
)
_SETTLE_COMPENSATION = (
    update(t.compensations)
    .where(
        t.compensations.c.deploy_id == bindparam("d"),
        t.compensations.c.source_key == bindparam("k"),
        t.compensations.c.state == "armed",
    )
    .values(state=bindparam("state"))
)


class StepsMixin(EventsMixin):
    """Writes and reads of steps, phases and compensations."""

    def step_rows(self, deploy_id: str) -> dict[str, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(select(t.steps).where(t.steps.c.deploy_id == deploy_id)).mappings()
            return {r["key"]: _row(r) for r in rows}

    def step_started(
        self,
        deploy_id: str,
        key: str,
        *,
        title: str,
        kind: str,
        step_id: str | None,
        attempts: int,
        new: bool | None = None,
        flush: bool = True,
    ) -> None:
        """Record that a step starts (``new``: no row for it yet, if the caller knows).
        ``flush=False`` only for an action that may run again after a crash (its kind is
        rerun-safe, or the plan says idempotent): losing this record in a database crash
        makes it run again, which is safe for it (see :meth:`tx`)."""
        ts = now()
        dialect = self.engine.dialect
        with driver_tx(self, flush=flush) as tx:
            updated = 0
            if new is not True:
                updated = tx.rowcount(
                    prepared("start_step", dialect, lambda: (_START_STEP, ())),
                    {"d": deploy_id, "k": key, "ts": ts, "attempts": attempts},
                )
            if not updated:
                tx.execute(
                    prepared("insert_step", dialect, lambda: (_INSERT_STEP, _STEP_KEYS)),
                    {
                        "deploy_id": deploy_id,
                        "key": key,
                        "title": title,
                        "kind": kind,
                        "state": "running",
                        "attempts": attempts,
                        "started_at": ts,
                        "step_id": step_id,
                    },
                )
            self._event(tx, deploy_id, "step.started", key, title)

    def step_finished(
        self,
        deploy_id: str,
        key: str,
        *,
        state: str,
        output: str | None = None,
        error: str | None = None,
        artifacts: dict[str, Any] | None = None,
        compensation_state: str | None = None,
        event_data: dict[str, Any] | None = None,
        flush: bool = True,
    ) -> None:
        """Record a step's end; in the same transaction, settle its armed compensation
        (``compensation_state``, if given) and forget the process groups it started (they
        have ended with it). ``flush=False``: the engine's end of an action whose start was
        flushed; losing it in a database crash leaves the action in flight, as a runner
        crash just before it would (see :meth:`tx`)."""
        dialect = self.engine.dialect
        with driver_tx(self, flush=flush) as tx:
            tx.execute(
                prepared("finish_step", dialect, lambda: (_FINISH_STEP, ())),
                {
                    "d": deploy_id,
                    "k": key,
                    "state": state,
                    "ts": now(),
                    "output": output,
                    "error": error,
                    "artifacts": artifacts,
                },
            )
            if compensation_state is not None:
                tx.execute(
                    prepared("settle_compensation", dialect, lambda: (_SETTLE_COMPENSATION, ())),
                    {"d": deploy_id, "k": key, "state": compensation_state},
                )
            _driver_delete_processes(self, tx, deploy_id, key)
            self._event(tx, deploy_id, f"step.{state}", key, error, event_data)

    def set_step_state(self, deploy_id: str, key: str, state: str, *, title: str = "") -> None:
        with self.tx() as conn:
            res = conn.execute(
                update(t.steps)
                .where(t.steps.c.deploy_id == deploy_id, t.steps.c.key == key)
                .values(state=state, ended_at=now())
            )
            if res.rowcount == 0:
                conn.execute(
                    insert(t.steps).values(
                        deploy_id=deploy_id,
                        key=key,
                        title=title or key,
                        kind="-",
                        state=state,
                        attempts=0,
                        started_at=now(),
                        ended_at=now(),
                    )
                )
            _delete_processes(conn, deploy_id, key)
            self._event(conn, deploy_id, f"step.{state}", key, title or None)

    def artifacts_by_step_id(self, deploy_id: str) -> dict[str, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.steps.c.step_id, t.steps.c.artifacts).where(
                    t.steps.c.deploy_id == deploy_id, t.steps.c.step_id.is_not(None)
                )
            )
            return {r[0]: (r[1] or {}) for r in rows}

    # --- phases ---------------------------------------------------------------------------
    def phase_rows(self, deploy_id: str) -> dict[int, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.phases).where(t.phases.c.deploy_id == deploy_id)
            ).mappings()
            return {r["idx"]: _row(r) for r in rows}

    def phase_started(self, deploy_id: str, idx: int, name: str, estimate_s: float | None) -> None:
        with self.tx() as conn:
            res = conn.execute(
                update(t.phases)
                .where(t.phases.c.deploy_id == deploy_id, t.phases.c.idx == idx)
                .values(state="running")
            )
            if res.rowcount == 0:
                conn.execute(
                    insert(t.phases).values(
                        deploy_id=deploy_id,
                        idx=idx,
                        name=name,
                        state="running",
                        estimate_s=estimate_s,
                        started_at=now(),
                    )
                )
            self._event(conn, deploy_id, "phase.started", f"phase/{idx}", name)

    def phase_finished(self, deploy_id: str, idx: int, state: str) -> None:
        with self.tx() as conn:
            conn.execute(
                update(t.phases)
                .where(t.phases.c.deploy_id == deploy_id, t.phases.c.idx == idx)
                .values(state=state, ended_at=now())
            )
            self._event(conn, deploy_id, f"phase.{state}", f"phase/{idx}", None)

    def mark_rolled_back(self, deploy_id: str, *, steps: list[str], phases: list[int]) -> None:
        """Relabel steps and phases whose effect a rollback undid as ``rolled_back`` (their
        start and end times stay those of the forward run). One commit."""
        with self.tx() as conn:
            for key in steps:
                conn.execute(
                    update(t.steps)
                    .where(t.steps.c.deploy_id == deploy_id, t.steps.c.key == key)
                    .values(state="rolled_back")
                )
            for idx in phases:
                conn.execute(
                    update(t.phases)
                    .where(t.phases.c.deploy_id == deploy_id, t.phases.c.idx == idx)
                    .values(state="rolled_back")
                )
            if steps or phases:
                data = {"steps": steps, "phases": phases}
                self._event(conn, deploy_id, "rollback.marked", None, None, data)

    # --- compensations --------------------------------------------------------------------
    def arm_compensation(
        self,
        deploy_id: str,
        *,
        phase: int,
        source_key: str,
        title: str,
        spec: dict[str, Any],
        partial_ok: bool,
    ) -> None:
        """Register a compensation before its step runs ('armed'); the step's end decides."""
        with self.tx() as conn:
            conn.execute(
                update(t.compensations)
                .where(
                    t.compensations.c.deploy_id == deploy_id,
                    t.compensations.c.source_key == source_key,
                    t.compensations.c.state.in_(["armed", "pending"]),
                )
                .values(state="void")
            )
            conn.execute(
                insert(t.compensations).values(
                    deploy_id=deploy_id,
                    phase=phase,
                    source_key=source_key,
                    title=title,
                    spec=spec,
                    state="armed",
                    partial_ok=int(partial_ok),
                )
            )

    def compensations(self, deploy_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.compensations)
                .where(t.compensations.c.deploy_id == deploy_id)
                .order_by(t.compensations.c.id)
            ).mappings()
            return [_row(r) for r in rows]

    def set_compensation_state(self, comp_id: int, state: str) -> None:
        with self.tx() as conn:
            conn.execute(
                update(t.compensations).where(t.compensations.c.id == comp_id).values(state=state)
            )
