"""The state store over SQLAlchemy Core: SQLite by default, PostgreSQL with a URL.

Every state change is committed before the engine takes its next action. SQLite runs in WAL
mode with ``synchronous=NORMAL``: a commit survives a crash of the tminus process (kill -9);
only a power loss can lose the newest commits.

Fault injection for tests (:mod:`tminus.faults`): with ``TMINUS_CRASH_AFTER_COMMITS=N`` the
process kills itself with SIGKILL right after its N-th counted commit, so crash tests can stop
the runner at every durable point. Heartbeats and process records are not counted.

Opening a store creates or upgrades its schema; several processes may do so at the same
instant (two first runs on a new machine): the upgrade runs under an exclusive lock, a
PostgreSQL advisory lock on the upgrading connection, or an ``flock`` of ``<db>.lock`` beside
a SQLite file, and the revision is read again once the lock is held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from tminus import faults
from tminus.engine.states import TERMINAL
from tminus.errors import LockHeld, NotFound, StoreError
from tminus.files import default_state_url
from tminus.procfs import pid_token
from tminus.store import schema as t

__all__ = [
    "HEAD_REVISION",
    "TERMINAL_STATES",
    "HolderCheck",
    "Store",
    "default_state_url",
    "now",
]

#: The newest Alembic revision of the schema; a test pins it to the migrations directory.
HEAD_REVISION = "0002"

#: The key of the PostgreSQL advisory lock held while the schema is created or upgraded
#: ("tminus" in ASCII). Advisory locks are per database, so stores never wait on each other.
_PG_SCHEMA_LOCK = 0x746D696E7573

#: Given the deploy row of a lock's holder: None when its runner is dead (the lock may be
#: taken over), else a description of the live runner (the takeover is refused).
HolderCheck = Callable[[dict[str, Any]], str | None]

#: Deploy states after which a deploy never runs again; a lock held by one is stale. The one
#: set is ``tminus.engine.states.TERMINAL`` (a leaf module that imports nothing); this name
#: stays for the store's callers.
TERMINAL_STATES = TERMINAL

# Statements of the per-step hot path, built once (SQLAlchemy then reuses their compiled form).
_INSERT_EVENT = insert(t.events)
_INSERT_STEP = insert(t.steps)
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
#: Attempts at creating a deploy or taking a lock when another process commits first.
_LOCK_ATTEMPTS = 20
_ABORT_REQUESTED = select(t.deploys.c.abort_requested).where(t.deploys.c.id == bindparam("d"))


def now() -> datetime:
    """The current time. ``TMINUS_CLOCK_OFFSET`` (seconds) shifts it, for tests of delays."""
    offset = os.environ.get("TMINUS_CLOCK_OFFSET")
    if offset:
        return datetime.now(UTC) + timedelta(seconds=float(offset))
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _normalize(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" not in url:  # a bare path
        return f"sqlite:///{url}"
    return url


class Store:
    """All reads and writes of tminus state."""

    def __init__(self, url: str | None = None) -> None:
        self.url = _normalize(url or default_state_url())
        self._conn: Connection | None = None
        if self.url.startswith("sqlite:///"):
            path = self.url[len("sqlite:///") :]
            if path and path != ":memory:":
                from tminus.files import private_sqlite

                private_sqlite(path)  # 0700 directory, 0600 file (and so its -wal and -shm)
            # check_same_thread off: the heartbeat may be written from another thread, on a
            # pool connection of its own (never one in use).
            self.engine: Engine = create_engine(
                self.url, connect_args={"timeout": 30, "check_same_thread": False}
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = create_engine(self.url, pool_pre_ping=True)
        try:
            self._migrate()
        except OperationalError as exc:
            raise StoreError(f"cannot open the state store {self.safe_url}: {exc.orig}") from None

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # --- schema ---------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Create or upgrade the schema to HEAD_REVISION, safely against other processes
        doing the same at the same instant: under an exclusive lock, re-reading the revision
        once it is held (the first process upgrades, the others find the head)."""
        if self.engine.dialect.name == "sqlite":
            # The first connection switches a new file to WAL, which needs the file to
            # itself: it too runs under the lock.
            with self._schema_file_lock(), self.engine.connect() as conn:
                if _revision(conn) != HEAD_REVISION:
                    conn.rollback()
                    with conn.begin():
                        _upgrade(conn)
                else:
                    conn.rollback()
            return
        with self.engine.connect() as conn:
            rev = _revision(conn)
            conn.rollback()
        if rev == HEAD_REVISION:
            return
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                # A session-level advisory lock, on the connection that upgrades.
                conn.exec_driver_sql(f"SELECT pg_advisory_lock({_PG_SCHEMA_LOCK})")
                conn.commit()
                try:
                    if _revision(conn) != HEAD_REVISION:
                        _upgrade(conn)
                    conn.commit()
                finally:
                    conn.rollback()
                    conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_PG_SCHEMA_LOCK})")
                    conn.commit()
            return
        with self.engine.begin() as conn:
            _upgrade(conn)

    @contextmanager
    def _schema_file_lock(self) -> Iterator[None]:
        """An exclusive ``flock`` of ``<db>.lock`` beside a SQLite file (nothing for other
        stores or an in-memory database)."""
        path = self.url[len("sqlite:///") :] if self.url.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            yield
            return
        from tminus.files import open_private

        with os.fdopen(open_private(f"{path}.lock", os.O_RDWR | os.O_CREAT), "r+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # --- transactions ---------------------------------------------------------------------
    def _connection(self) -> Connection:
        """The store's one connection, opened on first use and reused: a runner makes
        thousands of short transactions, and a pool checkout (with its reset and, for
        PostgreSQL, a pre-ping) per transaction costs more than the statements."""
        conn = self._conn
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            conn = self._conn = self.engine.connect()
        return conn

    @contextmanager
    def tx(self, *, count: bool = True) -> Iterator[Connection]:
        """A write transaction, committed on exit. On SQLite it begins IMMEDIATE (it takes
        the write lock at once, waiting up to the busy timeout), so a transaction that reads
        then writes never fails on another writer's commit in between.

        ``count``: the commit counts towards ``TMINUS_CRASH_AFTER_COMMITS``."""
        conn = self._connection()
        try:
            with _write_begin(conn):
                yield conn
        except DBAPIError as exc:
            if exc.connection_invalidated:
                self._conn = None  # reconnect next time
            raise
        if count:
            self._after_commit()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A short read transaction: ended at once, so the next read sees other processes'
        commits (an operator's abort, an approval)."""
        conn = self._connection()
        try:
            with conn.begin():
                yield conn
        except DBAPIError as exc:
            if exc.connection_invalidated:
                self._conn = None
            raise

    def _after_commit(self) -> None:
        faults.after_commit()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        self.engine.dispose()

    # --- deploys --------------------------------------------------------------------------
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

    # --- the runner ---------------------------------------------------------------------
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
        ``TMINUS_CRASH_AFTER_COMMITS`` (crash tests count commits deterministically)."""
        with self.engine.connect() as conn, _write_begin(conn):
            conn.execute(
                update(t.deploys).where(t.deploys.c.id == deploy_id).values(heartbeat_at=now())
            )

    def add_process(self, deploy_id: str, key: str, rec_host: str, pid: int, token: str) -> None:
        """Record a process group the step ``key`` started (``pid`` == its pgid) on
        ``rec_host``, so that it can be killed if the runner dies. One commit, not counted
        towards ``TMINUS_CRASH_AFTER_COMMITS``."""
        with self.tx(count=False) as conn:
            conn.execute(
                insert(t.processes).values(
                    deploy_id=deploy_id,
                    key=key,
                    host=rec_host,
                    pid=pid,
                    token=token,
                    started_at=now(),
                )
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
        towards ``TMINUS_CRASH_AFTER_COMMITS``."""
        with self.tx(count=False) as conn:
            _delete_processes(conn, deploy_id, key)

    # --- events ---------------------------------------------------------------------------
    def _event(
        self,
        conn: Connection,
        deploy_id: str,
        etype: str,
        key: str | None,
        message: str | None,
        data: dict[str, Any] | None = None,
    ) -> None:
        conn.execute(
            _INSERT_EVENT,
            {
                "deploy_id": deploy_id,
                "ts": now(),
                "type": etype,
                "key": key,
                "message": message,
                "data": data,
            },
        )

    def event(
        self,
        deploy_id: str,
        etype: str,
        message: str | None = None,
        *,
        key: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        with self.tx() as conn:
            self._event(conn, deploy_id, etype, key, message, data)

    def events(self, deploy_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.events).where(t.events.c.deploy_id == deploy_id).order_by(t.events.c.seq)
            ).mappings()
            return [_row(r) for r in rows]

    # --- steps ----------------------------------------------------------------------------
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
    ) -> None:
        """Record that a step starts (``new``: no row for it yet, if the caller knows)."""
        ts = now()
        with self.tx() as conn:
            updated = 0
            if new is not True:
                updated = conn.execute(
                    _START_STEP, {"d": deploy_id, "k": key, "ts": ts, "attempts": attempts}
                ).rowcount
            if not updated:
                conn.execute(
                    _INSERT_STEP,
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
            self._event(conn, deploy_id, "step.started", key, title)

    def step_finished(
        self,
        deploy_id: str,
        key: str,
        *,
        state: str,
        output: str | None = None,
        error: str | None = None,
        artifacts: dict[str, Any] | None = None,
        compensation: dict[str, Any] | None = None,
        event_data: dict[str, Any] | None = None,
    ) -> None:
        """Record a step's end; in the same transaction, update its compensation's state and
        forget the process groups it started (they have ended with it)."""
        with self.tx() as conn:
            conn.execute(
                _FINISH_STEP,
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
            if compensation is not None:
                conn.execute(
                    update(t.compensations)
                    .where(
                        t.compensations.c.deploy_id == deploy_id,
                        t.compensations.c.source_key == key,
                        t.compensations.c.state == "armed",
                    )
                    .values(**compensation)
                )
            _delete_processes(conn, deploy_id, key)
            self._event(conn, deploy_id, f"step.{state}", key, error, event_data)

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

    # --- approvals and confirmations ------------------------------------------------------
    def add_approval(
        self, deploy_id: str, gate: str, role: str, person: str, comment: str | None
    ) -> None:
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
                {"role": role, "person": person, "comment": comment},
            )

    def approvals(self, deploy_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.approvals).where(t.approvals.c.deploy_id == deploy_id)
            ).mappings()
            return [_row(r) for r in rows]

    def add_confirmation(self, deploy_id: str, item: str, person: str) -> None:
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
                {"item": item, "person": person},
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

    # --- locks ----------------------------------------------------------------------------
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


def _row(row: Any) -> dict[str, Any]:
    out = dict(row)
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = _aware(v)
    return out


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


def _delete_processes(conn: Connection, deploy_id: str, key: str | None) -> None:
    where = [t.processes.c.deploy_id == deploy_id]
    if key is not None:
        where.append(t.processes.c.key == key)
    conn.execute(t.processes.delete().where(*where))


def _revision(conn: Connection) -> str | None:
    """The schema's Alembic revision, or None for a new store."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def _upgrade(conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


def _write_begin(conn: Connection) -> Any:
    """``conn.begin()`` of a write transaction: BEGIN IMMEDIATE on SQLite (see Store.tx)."""
    if conn.dialect.name != "sqlite":
        return conn.begin()
    conn.info["tminus_immediate"] = True
    try:
        return conn.begin()
    finally:
        conn.info.pop("tminus_immediate", None)


def _sqlite_begin(conn: Connection) -> None:
    # The driver's own transaction handling is off (isolation_level None, see
    # _sqlite_pragmas): SQLAlchemy's begin emits BEGIN here, IMMEDIATE for a write.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("tminus_immediate") else "BEGIN")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # autocommit driver; _sqlite_begin emits BEGIN
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    # Switching a file to WAL needs it to itself and does not wait on the busy timeout.
    deadline = time.monotonic() + 30
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
