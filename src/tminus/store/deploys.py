"""Deploy rows (``deploys`` table) and what operators record on a deploy: approvals,
checklist confirmations and maintenance windows."""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from tminus.clock import now
from tminus.errors import NotFound, StoreError
from tminus.procfs import pid_token
from tminus.store import schema as t
from tminus.store._rows import _jsonable, _row
from tminus.store.events import EventsMixin

__all__ = ["DeploysMixin"]

#: Attempts at creating a deploy or taking a lock when another process commits first.
_LOCK_ATTEMPTS = 20
_ABORT_REQUESTED = select(t.deploys.c.abort_requested).where(t.deploys.c.id == bindparam("d"))


class DeploysMixin(EventsMixin):
    """Writes and reads of deploys, approvals, confirmations and maintenance windows."""

    def create_deploy(
        self,
        *,
        plan_name: str,
        environment: str,
        plan_path: str,
        plan_text: str,
        plan_hash: str,
        started_by: str,
        overrides: dict[str, Any],
        reason: str | None = None,
    ) -> str:
        """Create a deploy without taking its lock (tests, imports); runs use
        :meth:`create_deploy_locked`."""
        for _ in range(_LOCK_ATTEMPTS):
            try:
                with self.tx() as conn:
                    return self._insert_deploy(
                        conn,
                        plan_name=plan_name,
                        environment=environment,
                        plan_path=plan_path,
                        plan_text=plan_text,
                        plan_hash=plan_hash,
                        started_by=started_by,
                        overrides=overrides,
                        reason=reason,
                    )
            except IntegrityError:
                continue
        raise StoreError("could not allocate a deploy id")

    def _insert_deploy(
        self,
        conn: Connection,
        *,
        plan_name: str,
        environment: str,
        plan_path: str,
        plan_text: str,
        plan_hash: str,
        started_by: str,
        overrides: dict[str, Any],
        reason: str | None,
    ) -> str:
        """Insert the next deploy of ``plan_name`` (this process as its runner, with a first
        heartbeat) and its ``deploy.created`` event; returns its id. An IntegrityError means
        another process took the number first."""
        seq = (
            conn.execute(
                select(func.max(t.deploys.c.seq)).where(t.deploys.c.plan_name == plan_name)
            ).scalar()
            or 0
        ) + 1
        deploy_id = f"{plan_name}-{seq}"
        ts = now()
        conn.execute(
            insert(t.deploys).values(
                id=deploy_id,
                plan_name=plan_name,
                environment=environment,
                seq=seq,
                plan_path=plan_path,
                plan_text=plan_text,
                plan_hash=plan_hash,
                state="pending",
                reason=reason,
                started_by=started_by,
                host=socket.gethostname(),
                runner_pid=os.getpid(),
                runner_token=pid_token(os.getpid()),
                heartbeat_at=ts,
                created_at=ts,
                updated_at=ts,
                overrides=overrides,
            )
        )
        self._event(
            conn,
            deploy_id,
            "deploy.created",
            None,
            f"started by {started_by}" + (f": {reason}" if reason else ""),
        )
        return deploy_id

    def deploy(self, deploy_id: str) -> dict[str, Any]:
        with self._read() as conn:
            row = (
                conn.execute(select(t.deploys).where(t.deploys.c.id == deploy_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"no deploy '{deploy_id}'", hint="`tminus list` shows the deploys")
        return _row(row)

    def abort_requested(self, deploy_id: str) -> bool:
        with self._read() as conn:
            return bool(conn.execute(_ABORT_REQUESTED, {"d": deploy_id}).scalar())

    def pause_requested(self, deploy_id: str) -> str | None:
        """Who asked the deploy's runner to pause before its next step, or None."""
        with self._read() as conn:
            return conn.execute(
                select(t.deploys.c.pause_requested).where(t.deploys.c.id == deploy_id)
            ).scalar()

    def latest_deploy(self) -> dict[str, Any] | None:
        with self._read() as conn:
            row = (
                conn.execute(select(t.deploys).order_by(t.deploys.c.created_at.desc()).limit(1))
                .mappings()
                .first()
            )
        return _row(row) if row else None

    def list_deploys(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.deploys).order_by(t.deploys.c.created_at.desc()).limit(limit)
            ).mappings()
            return [_row(r) for r in rows]

    def deploy_page(
        self,
        *,
        state: str | None = None,
        plan: str | None = None,
        environment: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Deploys newest first, filtered, without their plan text (the API's and the
        dashboard's list: a store of ten thousand deploys reads one page)."""
        d = t.deploys.c
        cols = [c for c in t.deploys.c if c.name not in ("plan_text", "rollback_plan")]
        q = select(*cols)
        if state:
            q = q.where(d.state == state)
        if plan:
            q = q.where(d.plan_name == plan)
        if environment:
            q = q.where(d.environment == environment)
        q = q.order_by(d.created_at.desc(), d.id.desc()).offset(offset).limit(limit)
        with self._read() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    def set_deploy(
        self,
        deploy_id: str,
        *,
        event: str | None = None,
        message: str | None = None,
        event_data: dict[str, Any] | None = None,
        **values: Any,
    ) -> None:
        """Update the deploy row; with ``event``, record it in the same transaction (its data:
        the values written, and ``event_data``). Writing ``runner_pid`` also writes its start
        token (unless given) and a heartbeat, so the row never pairs a pid with another
        process's token."""
        values["updated_at"] = now()
        if values.get("runner_pid") and "runner_token" not in values:
            values["runner_token"] = pid_token(int(values["runner_pid"]))
            values.setdefault("heartbeat_at", values["updated_at"])
        with self.tx() as conn:
            conn.execute(update(t.deploys).where(t.deploys.c.id == deploy_id).values(**values))
            if event:
                data = _jsonable(values) | (event_data or {})
                self._event(conn, deploy_id, event, None, message, data)

    # --- approvals and confirmations ------------------------------------------------------
    def add_approval(
        self,
        deploy_id: str,
        gate: str,
        role: str,
        person: str,
        comment: str | None,
        *,
        audit: dict[str, Any] | None = None,
    ) -> None:
        """Record an approval; ``audit`` (where an API request came from: ``via``,
        ``address``, ``user_agent``) goes into its event."""
        with self.tx() as conn:
            conn.execute(
                insert(t.approvals).values(
                    deploy_id=deploy_id,
                    gate=gate,
                    role=role,
                    person=person,
                    comment=comment,
                    ts=now(),
                )
            )
            self._event(
                conn,
                deploy_id,
                "approval.given",
                gate,
                f"{role} approved by {person}",
                {"role": role, "person": person, "comment": comment} | (audit or {}),
            )

    def approvals(self, deploy_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.approvals).where(t.approvals.c.deploy_id == deploy_id)
            ).mappings()
            return [_row(r) for r in rows]

    def add_confirmation(
        self, deploy_id: str, item: str, person: str, *, audit: dict[str, Any] | None = None
    ) -> None:
        with self.tx() as conn:
            exists = conn.execute(
                select(t.confirmations.c.item).where(
                    t.confirmations.c.deploy_id == deploy_id, t.confirmations.c.item == item
                )
            ).first()
            if exists:
                return
            conn.execute(
                insert(t.confirmations).values(
                    deploy_id=deploy_id, item=item, person=person, ts=now()
                )
            )
            self._event(
                conn,
                deploy_id,
                "checklist.confirmed",
                None,
                f"{item} — by {person}",
                {"item": item, "person": person} | (audit or {}),
            )

    def confirmations(self, deploy_id: str) -> dict[str, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.confirmations).where(t.confirmations.c.deploy_id == deploy_id)
            ).mappings()
            return {r["item"]: _row(r) for r in rows}

    # --- maintenance ----------------------------------------------------------------------
    def maintenance_on(self, deploy_id: str, phase: int) -> None:
        with self.tx() as conn:
            open_row = conn.execute(
                select(t.maintenance.c.id).where(
                    t.maintenance.c.deploy_id == deploy_id, t.maintenance.c.off_at.is_(None)
                )
            ).first()
            if open_row is None:
                conn.execute(
                    insert(t.maintenance).values(deploy_id=deploy_id, phase=phase, on_at=now())
                )
            self._event(conn, deploy_id, "maintenance.on", f"phase/{phase}", None)

    def maintenance_off(self, deploy_id: str) -> None:
        with self.tx() as conn:
            conn.execute(
                update(t.maintenance)
                .where(t.maintenance.c.deploy_id == deploy_id, t.maintenance.c.off_at.is_(None))
                .values(off_at=now())
            )
            self._event(conn, deploy_id, "maintenance.off", None, None)

    def maintenance_windows(self, deploy_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.maintenance).where(t.maintenance.c.deploy_id == deploy_id)
            ).mappings()
            return [_row(r) for r in rows]
