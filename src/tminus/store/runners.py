"""The processes behind a deploy: its runner (pid, host, start token, heartbeat) and the
process groups its steps started (``processes`` table), so a dead runner can be detected
and its work killed. Heartbeats and process records are not counted as fault points.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from tminus.clock import now
from tminus.procfs import pid_token
from tminus.store import schema as t
from tminus.store._connect import StoreBase, _write_begin
from tminus.store._driver import DriverTx, driver_tx, prepared
from tminus.store._rows import _row

__all__ = ["RunnersMixin"]

# Statements of the per-step hot path, built once (SQLAlchemy then reuses their compiled form).
_INSERT_PROCESS = insert(t.processes)
_DELETE_DEPLOY_PROCESSES = t.processes.delete().where(t.processes.c.deploy_id == bindparam("d"))
_DELETE_STEP_PROCESSES = _DELETE_DEPLOY_PROCESSES.where(t.processes.c.key == bindparam("k"))
_PROCESS_KEYS = ("deploy_id", "key", "host", "pid", "token", "started_at")


class RunnersMixin(StoreBase):
    """The runner of a deploy, its heartbeat and its process records."""

    def set_runner(
        self,
        deploy_id: str,
        pid: int | None = None,
        host: str | None = None,
        token: str | None = None,
    ) -> None:
        """Record the process that drives the deploy now (default: this one): its pid, host
        and start token (/proc/PID/stat field 22), with a first heartbeat. One commit."""
        pid = os.getpid() if pid is None else pid
        ts = now()
        with self.tx() as conn:
            conn.execute(
                update(t.deploys)
                .where(t.deploys.c.id == deploy_id)
                .values(
                    runner_pid=pid,
                    host=host or socket.gethostname(),
                    runner_token=token if token is not None else pid_token(pid),
                    heartbeat_at=ts,
                    updated_at=ts,
                )
            )

    def heartbeat(self, deploy_id: str) -> None:
        """The runner is alive: update ``deploys.heartbeat_at``. On a pool connection of its
        own (so it may be called from another thread), and not counted towards
        the fault points (crash tests count commits deterministically)."""
        with self.engine.connect() as conn, _write_begin(conn):
            conn.execute(
                update(t.deploys).where(t.deploys.c.id == deploy_id).values(heartbeat_at=now())
            )

    def add_process(self, deploy_id: str, key: str, rec_host: str, pid: int, token: str) -> None:
        """Record a process group the step ``key`` started (``pid`` == its pgid) on
        ``rec_host``, so that it can be killed if the runner dies. One commit, not counted
        towards the fault points, not waiting for its flush on PostgreSQL: it is kept if the
        runner dies, which is what it is for (see :meth:`tx`). Through the driver (a record
        of every spawn: :mod:`tminus.store._driver`)."""
        stmt = prepared(
            "insert_process", self.engine.dialect, lambda: (_INSERT_PROCESS, _PROCESS_KEYS)
        )
        with driver_tx(self, count=False, flush=False) as tx:
            tx.execute(
                stmt,
                {
                    "deploy_id": deploy_id,
                    "key": key,
                    "host": rec_host,
                    "pid": pid,
                    "token": token,
                    "started_at": now(),
                },
            )

    def processes(self, deploy_id: str) -> list[dict[str, Any]]:
        """The process groups recorded for the deploy (id, key, host, pid, token,
        started_at), oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                select(
                    t.processes.c.id,
                    t.processes.c.key,
                    t.processes.c.host,
                    t.processes.c.pid,
                    t.processes.c.token,
                    t.processes.c.started_at,
                )
                .where(t.processes.c.deploy_id == deploy_id)
                .order_by(t.processes.c.id)
            ).mappings()
            return [_row(r) for r in rows]

    def clear_processes(self, deploy_id: str, key: str | None = None) -> None:
        """Forget the deploy's process records (only step ``key``'s, if given). Not counted
        towards the fault points."""
        with self.tx(count=False) as conn:
            _delete_processes(conn, deploy_id, key)


def _driver_delete_processes(store: StoreBase, tx: DriverTx, deploy_id: str, key: str) -> None:
    """Forget step ``key``'s process groups, in a transaction of the driver."""
    stmt = prepared(
        "delete_step_processes", store.engine.dialect, lambda: (_DELETE_STEP_PROCESSES, ())
    )
    tx.execute(stmt, {"d": deploy_id, "k": key})


def _delete_processes(conn: Connection, deploy_id: str, key: str | None) -> None:
    if key is None:
        conn.execute(_DELETE_DEPLOY_PROCESSES, {"d": deploy_id})
    else:
        conn.execute(_DELETE_STEP_PROCESSES, {"d": deploy_id, "k": key})
