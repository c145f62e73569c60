"""The (plan, environment) locks (``locks`` table): taking one, with the deploy it is for or
alone, judging whether its holder has ended or its runner is dead (a takeover), releasing it."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from tminus.clock import now
from tminus.errors import LockHeld, NotFound, StoreError
from tminus.states import TERMINAL
from tminus.store import schema as t
from tminus.store._rows import _jsonable, _row
from tminus.store.deploys import _LOCK_ATTEMPTS, DeploysMixin

__all__ = ["TERMINAL_STATES", "HolderCheck", "LocksMixin"]

#: Given the deploy row of a lock's holder: None when its runner is dead (the lock may be
#: taken over), else a description of the live runner (the takeover is refused).
HolderCheck = Callable[[dict[str, Any]], str | None]

#: Deploy states after which a deploy never runs again; a lock held by one is stale. The one
#: set is ``tminus.states.TERMINAL`` (a leaf module that imports nothing); this name
#: stays for the store's callers.
TERMINAL_STATES = TERMINAL


class LocksMixin(DeploysMixin):
    """Taking, checking and releasing plan locks."""

    def create_deploy_locked(
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
        force: bool = False,
        holder_check: HolderCheck | None = None,
    ) -> tuple[str, dict[str, Any] | None]:
        """Create a deploy and take its (plan, environment) lock in ONE transaction, so a
        deploy that loses the lock leaves no record behind. The row names this process as
        its runner (pid, host, start token, a first heartbeat).

        Returns the deploy id and the lock taken over (``force``, or a lock left by a deploy
        that has ended), if any. Raises LockHeld naming the holder; with ``force`` too while
        ``holder_check`` finds the holder's runner alive."""
        for _ in range(_LOCK_ATTEMPTS):
            try:
                with self.tx() as conn:
                    cur = self._lock_row(conn, plan_name, environment)
                    taken = None
                    if cur is not None:
                        taken = self._judge_holder(
                            conn, plan_name, environment, cur, force, holder_check
                        )
                    deploy_id = self._insert_deploy(
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
                    self._take_lock(
                        conn, plan_name, environment, deploy_id, started_by, reason, taken
                    )
                return deploy_id, taken
            except IntegrityError:
                # Another process committed first: a deploy with this number, or the lock.
                # Nothing of ours was written; look again (the lock row names the holder).
                continue
        raise StoreError(f"could not create a deploy of '{plan_name}': too many concurrent runs")

    def acquire_lock(
        self,
        plan_name: str,
        environment: str,
        deploy_id: str,
        holder: str,
        reason: str | None,
        *,
        force: bool = False,
        holder_check: HolderCheck | None = None,
    ) -> dict[str, Any] | None:
        """Take the (plan, environment) lock for ``deploy_id``. Returns the lock taken over
        when ``force`` broke a stale one (or its holder had ended); raises LockHeld when
        another deploy holds it, and with ``force`` too while ``holder_check`` finds the
        holder's runner alive."""
        for _ in range(_LOCK_ATTEMPTS):
            try:
                with self.tx() as conn:
                    cur = self._lock_row(conn, plan_name, environment)
                    if cur is not None and cur["deploy_id"] == deploy_id:
                        conn.execute(
                            update(t.locks)
                            .where(
                                t.locks.c.plan_name == plan_name,
                                t.locks.c.environment == environment,
                            )
                            .values(pid=os.getpid(), host=socket.gethostname())
                        )
                        return None
                    taken = None
                    if cur is not None:
                        taken = self._judge_holder(
                            conn, plan_name, environment, cur, force, holder_check
                        )
                    self._take_lock(conn, plan_name, environment, deploy_id, holder, reason, taken)
                return taken
            except IntegrityError:
                continue  # taken by another process meanwhile: look again, to name it
        raise StoreError(f"could not take the lock of '{plan_name}' in '{environment}'")

    def _lock_row(
        self, conn: Connection, plan_name: str, environment: str
    ) -> dict[str, Any] | None:
        row = (
            conn.execute(
                select(t.locks).where(
                    t.locks.c.plan_name == plan_name, t.locks.c.environment == environment
                )
            )
            .mappings()
            .first()
        )
        return _row(row) if row else None

    def _judge_holder(
        self,
        conn: Connection,
        plan_name: str,
        environment: str,
        cur: dict[str, Any],
        force: bool,
        holder_check: HolderCheck | None,
    ) -> dict[str, Any]:
        """The lock ``cur`` is held by another deploy: return it if it may be taken over,
        else raise LockHeld naming its holder."""
        row = (
            conn.execute(select(t.deploys).where(t.deploys.c.id == cur["deploy_id"]))
            .mappings()
            .first()
        )
        holder = _row(row) if row else None
        # A deploy that has ended holds nothing (it died between its last write and the
        # release): its lock is stale by definition.
        if holder is None or holder["state"] in TERMINAL_STATES:
            return cur
        live = holder_check(holder) if holder_check is not None else None
        if not force:
            raise _lock_held(plan_name, environment, cur, live)
        if live is not None:
            exc = _lock_held(plan_name, environment, cur, live, refused=True)
            exc.hint = (
                f"--force-unlock takes only a dead runner's lock; wait for {cur['deploy_id']}, "
                f"or stop it: tminus abort {cur['deploy_id']}"
            )
            raise exc
        return cur

    def _take_lock(
        self,
        conn: Connection,
        plan_name: str,
        environment: str,
        deploy_id: str,
        holder: str,
        reason: str | None,
        taken: dict[str, Any] | None,
    ) -> None:
        if taken is not None:
            conn.execute(
                t.locks.delete().where(
                    t.locks.c.plan_name == plan_name,
                    t.locks.c.environment == environment,
                    t.locks.c.deploy_id == taken["deploy_id"],
                )
            )
            self._event(
                conn,
                deploy_id,
                "lock.taken_over",
                None,
                f"took the lock of {taken['deploy_id']} held by {taken['holder']}",
                _jsonable(taken),
            )
            self._event(
                conn,
                taken["deploy_id"],
                "lock.lost",
                None,
                f"lock taken over by {holder} for {deploy_id}",
            )
        conn.execute(
            insert(t.locks).values(
                plan_name=plan_name,
                environment=environment,
                deploy_id=deploy_id,
                holder=holder,
                host=socket.gethostname(),
                pid=os.getpid(),
                acquired_at=now(),
                reason=reason,
            )
        )
        self._event(conn, deploy_id, "lock.acquired", None, f"{plan_name}/{environment}")

    def check_lock(
        self, plan_name: str, environment: str, holder_check: HolderCheck | None = None
    ) -> None:
        """Raise LockHeld if a deploy that has not ended holds the lock."""
        cur = self.lock(plan_name, environment)
        if cur is None:
            return
        try:
            holder = self.deploy(cur["deploy_id"])
        except NotFound:
            return
        if holder["state"] in TERMINAL_STATES:
            return
        live = holder_check(holder) if holder_check is not None else None
        raise _lock_held(plan_name, environment, cur, live)

    def release_lock(self, plan_name: str, environment: str, deploy_id: str) -> None:
        with self.tx() as conn:
            res = conn.execute(
                t.locks.delete().where(
                    t.locks.c.plan_name == plan_name,
                    t.locks.c.environment == environment,
                    t.locks.c.deploy_id == deploy_id,
                )
            )
            if res.rowcount:
                self._event(conn, deploy_id, "lock.released", None, None)

    def lock(self, plan_name: str, environment: str) -> dict[str, Any] | None:
        with self._read() as conn:
            return self._lock_row(conn, plan_name, environment)


def _lock_held(
    plan_name: str,
    environment: str,
    c: dict[str, Any],
    live: str | None = None,
    *,
    refused: bool = False,
) -> LockHeld:
    return LockHeld(
        ("--force-unlock refused: " if refused else "")
        + f"plan '{plan_name}' in '{environment}' is locked by deploy {c['deploy_id']}: held by "
        f"{c['holder']} on {c['host']} (pid {c['pid']}) since "
        f"{c['acquired_at']:%Y-%m-%d %H:%M:%S %Z}"
        + (f", reason: {c['reason']}" if c["reason"] else "")
        + (f"; its runner is alive: {live}" if live else ""),
        holder=c,
    )
