"""The state store over SQLAlchemy Core: SQLite by default, PostgreSQL with a URL.

Every state change is committed before the engine takes its next action. SQLite runs in WAL
mode with ``synchronous=NORMAL``: a commit survives a crash of the tminus process (kill -9);
only a power loss can lose the newest commits.

Fault injection for tests: with ``TMINUS_CRASH_AFTER_COMMITS=N`` the process kills itself
with SIGKILL right after its N-th commit, so crash tests can stop the runner at every durable
point.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
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
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from tminus.errors import LockHeld, NotFound, StoreError
from tminus.store import schema as t

__all__ = ["HEAD_REVISION", "TERMINAL_STATES", "Store", "default_state_url", "now"]

#: The newest Alembic revision of the schema; a test pins it to the migrations directory.
HEAD_REVISION = "0001"

#: Deploy states after which a deploy never runs again; a lock held by one is stale.
TERMINAL_STATES = frozenset({"succeeded", "rolled_back", "failed", "aborted"})

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


def default_state_url() -> str:
    env = os.environ.get("TMINUS_STATE")
    if env:
        return env
    return "sqlite:///.tminus/state.db"


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
        self._crash_after = int(os.environ.get("TMINUS_CRASH_AFTER_COMMITS", "0") or 0)
        self._commits = 0
        self._conn: Connection | None = None
        if self.url.startswith("sqlite:///"):
            path = self.url[len("sqlite:///") :]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(self.url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
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
        with self.engine.begin() as conn:
            try:
                rev = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            except Exception:
                rev = None
        if rev == HEAD_REVISION:
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

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
    def tx(self) -> Iterator[Connection]:
        """A write transaction, committed on exit."""
        conn = self._connection()
        try:
            with conn.begin():
                yield conn
        except DBAPIError as exc:
            if exc.connection_invalidated:
                self._conn = None  # reconnect next time
            raise
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
        self._commits += 1
        if self._crash_after and self._commits >= self._crash_after:
            os.kill(os.getpid(), signal.SIGKILL)

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
        for _ in range(20):
            with self._read() as conn:
                seq = (
                    conn.execute(
                        select(func.max(t.deploys.c.seq)).where(t.deploys.c.plan_name == plan_name)
                    ).scalar()
                    or 0
                ) + 1
            deploy_id = f"{plan_name}-{seq}"
            ts = now()
            try:
                with self.tx() as conn:
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
            except IntegrityError:
                continue
        raise StoreError("could not allocate a deploy id")

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
        self, deploy_id: str, *, event: str | None = None, message: str | None = None, **values: Any
    ) -> None:
        values["updated_at"] = now()
        with self.tx() as conn:
            conn.execute(update(t.deploys).where(t.deploys.c.id == deploy_id).values(**values))
            if event:
                self._event(conn, deploy_id, event, None, message, _jsonable(values))

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
        """Record a step's end; in the same transaction, update its compensation's state."""
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
    def acquire_lock(
        self,
        plan_name: str,
        environment: str,
        deploy_id: str,
        holder: str,
        reason: str | None,
        *,
        force: bool = False,
    ) -> dict[str, Any] | None:
        """Take the (plan, environment) lock for ``deploy_id``. Returns the lock taken over
        when ``force`` broke a stale one; raises LockHeld when another deploy holds it."""
        host = socket.gethostname()
        with self.tx() as conn:
            cur = (
                conn.execute(
                    select(t.locks).where(
                        t.locks.c.plan_name == plan_name, t.locks.c.environment == environment
                    )
                )
                .mappings()
                .first()
            )
            if cur is not None and cur["deploy_id"] == deploy_id:
                conn.execute(
                    update(t.locks)
                    .where(t.locks.c.plan_name == plan_name, t.locks.c.environment == environment)
                    .values(pid=os.getpid(), host=host)
                )
                return None
            taken: dict[str, Any] | None = None
            if cur is not None:
                holder_state = conn.execute(
                    select(t.deploys.c.state).where(t.deploys.c.id == cur["deploy_id"])
                ).scalar()
                # A deploy that has ended holds nothing (it died between its last write and
                # the release): its lock is stale by definition.
                if holder_state in TERMINAL_STATES:
                    force = True
                if not force:
                    raise _lock_held(plan_name, environment, _row(cur))
                taken = _row(cur)
                conn.execute(
                    t.locks.delete().where(
                        t.locks.c.plan_name == plan_name, t.locks.c.environment == environment
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
            try:
                conn.execute(
                    insert(t.locks).values(
                        plan_name=plan_name,
                        environment=environment,
                        deploy_id=deploy_id,
                        holder=holder,
                        host=host,
                        pid=os.getpid(),
                        acquired_at=now(),
                        reason=reason,
                    )
                )
            except IntegrityError:
                raise LockHeld(
                    f"plan '{plan_name}' in '{environment}' was locked concurrently"
                ) from None
            self._event(conn, deploy_id, "lock.acquired", None, f"{plan_name}/{environment}")
        return taken

    def check_lock(self, plan_name: str, environment: str) -> None:
        """Raise LockHeld if a deploy that has not ended holds the lock."""
        cur = self.lock(plan_name, environment)
        if cur is None:
            return
        if self.deploy(cur["deploy_id"])["state"] in TERMINAL_STATES:
            return
        raise _lock_held(plan_name, environment, cur)

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


def _lock_held(plan_name: str, environment: str, c: dict[str, Any]) -> LockHeld:
    return LockHeld(
        f"plan '{plan_name}' in '{environment}' is locked by deploy {c['deploy_id']}: held by "
        f"{c['holder']} on {c['host']} (pid {c['pid']}) since "
        f"{c['acquired_at']:%Y-%m-%d %H:%M:%S %Z}"
        + (f", reason: {c['reason']}" if c["reason"] else ""),
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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
