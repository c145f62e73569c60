"""``kind: migrate``: a schema migration with alembic, a golang-migrate style directory of
``NNN_name.up.sql``/``NNN_name.down.sql`` files, or a pair of shell commands.

Every tool records the database's version **before** (artifact ``before``) and **after**
(artifact ``after``) the migration; ``on_rollback: down`` (the default) returns to the
before-version when the deploy rolls back.

How the before-version reaches the compensation
-----------------------------------------------
The engine asks for a step's compensation *before* the step runs, but the before-version is
only known once the step is running. Two ways were considered:

* an artifact reference (``revision: ${artifact:ID.before}`` in the compensation): it needs a
  step ``id`` (most migrate steps have none, and a missing id cannot be invented at run time),
  ``to:`` is an integer and cannot carry a reference, and artifacts are stored only when the
  step *finishes*, so a runner killed in the middle of a migration loses the before-version
  exactly when a rollback needs it;
* a **record file** ``<state_dir>/migrate/<deploy id>-<step key>.json`` (chosen). ``execute``
  writes it (write, fsync, atomic rename) when the step starts (``known: false``) and again,
  with the before-version (``known: true``), right before the first change to the database.
  The first attempt wins: a retry (``retries:``, ``--retry-step``) keeps the version from
  before the *first* attempt, not from after a half-applied one. No step id is needed, and the
  record survives a crash mid-migration.

The compensation is a copy of the step whose ``revision`` is ``before:<step key>`` (a marker:
"migrate down to the version recorded before that step"), ``idempotent: true`` (except the
command tool without a ``version`` command) and ``on_rollback: none`` (no undo of the undo).
Reading the record: missing → the step fails (the state directory was lost, or the rollback
runs on another machine: check by hand); ``known: false`` → the migration never changed
anything, nothing to undo; otherwise down to ``before``. Every down path is a no-op at the
target version already, so a rollback action re-run after a crash is safe. The compensation is
``partial_ok``: a migration that failed part-way (two of three files applied) is undone too,
and a dirty version table makes the undo fail loudly rather than report a clean rollback.

See docs/migrations.md for the tools, the version table and the dirty flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.pool import NullPool

from tminus import work
from tminus.files import private_dir, private_text
from tminus.hosts.local import LocalHost
from tminus.plan.interpolate import ResolveError, Resolver
from tminus.plan.steps import MigrateStep, RestoreStep
from tminus.sqlrun import db_error, engine_url
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = [
    "BEFORE_PREFIX",
    "KIND",
    "VERSION_TABLE",
    "MigrateError",
    "MigrateKind",
    "SqlDir",
    "record_path",
    "split_sql",
]

#: ``revision`` of a compensation: "down to the version recorded before step <key>".
BEFORE_PREFIX = "before:"
#: golang-migrate's version table: one row, the current version and the dirty flag.
VERSION_TABLE = "schema_migrations"

_MYSQL = ("mysql", "mariadb")
_FILE_RE = re.compile(r"^(\d+)_(.+)\.(up|down)\.sql$")
_T = TypeVar("_T")
Log = Callable[[str], None]


class MigrateError(Exception):
    """A migration problem with a message meant for the operator."""


# --- the before-version record ---------------------------------------------------------------
def record_path(state_dir: Path, deploy_id: str, key: str) -> Path:
    """Where the before-version of the step at ``key`` of ``deploy_id`` is recorded."""
    return state_dir / "migrate" / f"{deploy_id}-{key.replace('/', '-')}.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    private_dir(path.parent)  # 0700, the record 0600
    tmp = path.with_name(path.name + ".tmp")
    with private_text(tmp) as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MigrateError(f"cannot read the before-version record {path}: {exc}") from None
    if not isinstance(data, dict):
        raise MigrateError(f"the before-version record {path} is not a JSON object")
    return data


def _mark_started(path: Path, step: MigrateStep, ctx: StepContext) -> None:
    if path.exists():
        return
    _write_json(
        path,
        {
            "deploy_id": ctx.deploy_id,
            "key": ctx.key,
            "tool": step.tool,
            "database": step.database,
            "known": False,
            "before": None,
            "started_at": datetime.now(UTC).isoformat(),
        },
    )


def _record_before(path: Path, before: Any) -> Any:
    """Record ``before`` unless an earlier attempt did; returns the recorded version."""
    rec = _read_record(path) or {}
    if rec.get("known"):
        return rec.get("before")
    rec.update(known=True, before=before, recorded_at=datetime.now(UTC).isoformat())
    _write_json(path, rec)
    return before


# --- helpers ---------------------------------------------------------------------------------
async def _in_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """Run blocking migration work in a thread (:func:`tminus.work.in_thread`). If the step is
    cancelled (its timeout, an abort), the running statement is cancelled on the server (the
    SQLAlchemy connections of the thread, alembic's too, register their cancel), so its
    transaction rolls back where the database allows (PostgreSQL and SQLite DDL; MariaDB's DDL
    commits on its own, and a ``sql_dir`` version is left dirty); the thread is awaited before
    the cancellation goes on, so a rollback never starts while the migration still runs."""
    return await work.in_thread(fn, *args)


def _down_key(step: MigrateStep) -> str | None:
    """The step key whose recorded before-version this (compensation) step migrates down to."""
    if step.revision.startswith(BEFORE_PREFIX):
        return step.revision[len(BEFORE_PREFIX) :]
    return None


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)


class _Tool(Protocol):
    """What the kind needs from a tool. Versions: int (sql_dir) or str (alembic, command);
    None means "nothing applied" (alembic base, no row in schema_migrations)."""

    async def current(self) -> Any: ...

    async def up(self) -> None: ...

    async def down_to(self, target: Any) -> None: ...


# --- sql_dir ---------------------------------------------------------------------------------
@dataclass
class _Migration:
    version: int
    name: str
    up: Path | None = None
    down: Path | None = None


def scan_dir(directory: Path) -> dict[int, _Migration]:
    """The migrations of a golang-migrate style directory, by version."""
    if not directory.is_dir():
        raise MigrateError(f"migrations directory {directory} does not exist")
    out: dict[int, _Migration] = {}
    for p in sorted(directory.iterdir()):
        m = _FILE_RE.match(p.name)
        if m is None or not p.is_file():
            continue  # like golang-migrate: files that do not parse are ignored
        version, name, direction = int(m.group(1)), m.group(2), m.group(3)
        mig = out.setdefault(version, _Migration(version, name))
        if getattr(mig, direction) is not None:
            raise MigrateError(
                f"duplicate {direction} migration for version {version} in {directory}: "
                f"{getattr(mig, direction).name} and {p.name}"
            )
        setattr(mig, direction, p)
    for mig in out.values():
        if mig.up is None:
            raise MigrateError(f"version {mig.version} in {directory} has no .up.sql file")
    return out


def split_sql(sql: str, dialect: str) -> list[str]:
    """Split a migration file into statements for drivers that run one at a time.

    SQLite: at each ``;`` that ends a complete statement (``sqlite3.complete_statement``
    knows quotes, comments and ``CREATE TRIGGER … BEGIN … END``). Others: quotes,
    ``--`` and ``/* */`` comments and ``$tag$`` quoting are respected; on MySQL/MariaDB also
    backquotes, backslash escapes in strings and ``#`` comments."""
    if dialect == "sqlite":
        out: list[str] = []
        buf = ""
        for piece in sql.split(";"):
            buf += piece + ";"
            if sqlite3.complete_statement(buf):
                out.append(buf)
                buf = ""
        rest = buf[:-1]
        if _has_code(rest, dialect):
            out.append(rest)
        return [s.strip() for s in out if _has_code(s, dialect)]
    return [s for s in _split_generic(sql, dialect) if _has_code(s, dialect)]


def _split_generic(sql: str, dialect: str) -> list[str]:
    mysql = dialect in _MYSQL
    quotes = "'\"`" if mysql else "'\""
    out: list[str] = []
    start = i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in quotes:
            i += 1
            while i < n and sql[i] != c:
                i += 2 if mysql and sql[i] == "\\" else 1
            i += 1
        elif sql.startswith("--", i) or (mysql and c == "#"):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == "$" and (m := re.match(r"\$[A-Za-z_]*\$", sql[i:])):
            j = sql.find(m.group(0), i + len(m.group(0)))
            i = n if j < 0 else j + len(m.group(0))
        elif c == ";":
            out.append(sql[start:i].strip())
            i += 1
            start = i
        else:
            i += 1
    out.append(sql[start:].strip())
    return out


def _has_code(stmt: str, dialect: str) -> bool:
    """Whether a statement has anything besides whitespace, comments and semicolons."""
    s = re.sub(r"/\*.*?\*/", " ", stmt, flags=re.S)
    s = re.sub(r"--[^\n]*", " ", s)
    if dialect in _MYSQL:
        s = re.sub(r"#[^\n]*", " ", s)
    return bool(s.replace(";", " ").strip())


class SqlDir:
    """golang-migrate's model on any SQLAlchemy database: files ``NNN_name.up.sql`` and
    ``NNN_name.down.sql``, and a one-row table ``schema_migrations(version, dirty)``."""

    def __init__(
        self, kind: str, url: str, directory: Path, log: Log, to: int | None = None
    ) -> None:
        self.kind = kind
        self.url = url
        self.directory = directory
        self.log = log
        self.to = to

    @contextlib.contextmanager
    def _engine(self) -> Iterator[Engine]:
        engine = create_engine(engine_url(self.kind, self.url), poolclass=NullPool)
        if engine.dialect.name == "sqlite":
            # pysqlite does not open a transaction before DDL on its own: take over BEGIN so
            # that a migration file is all-or-nothing (SQLAlchemy's documented recipe).
            @event.listens_for(engine, "connect")
            def _connect(dbapi_conn: Any, record: Any) -> None:
                dbapi_conn.isolation_level = None

            @event.listens_for(engine, "begin")
            def _begin(conn: Connection) -> None:
                conn.exec_driver_sql("BEGIN")

        try:
            yield engine
        finally:
            engine.dispose()

    # the version table
    @staticmethod
    def _read(conn: Connection) -> tuple[int | None, bool]:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None, False
        rows = conn.execute(text(f"SELECT version, dirty FROM {VERSION_TABLE}")).all()
        if not rows:
            return None, False
        if len(rows) > 1:
            raise MigrateError(
                f"{VERSION_TABLE} has {len(rows)} rows; golang-migrate keeps exactly one"
            )
        version, dirty = int(rows[0][0]), bool(rows[0][1])
        return (None if version < 0 else version), dirty

    @staticmethod
    def _set(conn: Connection, version: int | None, dirty: bool) -> None:
        conn.execute(text(f"DELETE FROM {VERSION_TABLE}"))
        if version is not None or dirty:  # golang-migrate: no version and clean = no row
            conn.execute(
                text(f"INSERT INTO {VERSION_TABLE} (version, dirty) VALUES (:v, :d)"),
                {"v": -1 if version is None else version, "d": dirty},
            )

    def _dirty_error(self, version: int | None) -> MigrateError:
        v = -1 if version is None else version
        return MigrateError(
            f"{VERSION_TABLE} is dirty at version {v}: a migration failed or was interrupted "
            "part-way, so the schema may be half-migrated. Inspect the database and repair it, "
            f"then force the version (`migrate -path {self.directory} -database URL force V`, "
            f"or UPDATE {VERSION_TABLE} SET version = V, dirty = false), then resume"
        )

    async def current(self) -> int | None:
        return await _in_thread(self.read_current)

    async def up(self) -> None:
        await _in_thread(self.apply_up, self.to)

    async def down_to(self, target: Any) -> None:
        if target is not None and not isinstance(target, int):
            raise MigrateError(f"recorded version {target!r} is not a sql_dir version")
        await _in_thread(self.apply_down_to, target)

    def read_current(self) -> int | None:
        """The current version (None: no migration applied); a dirty table is an error."""
        with self._engine() as engine, engine.connect() as conn:
            version, dirty = self._read(conn)
        if dirty:
            raise self._dirty_error(version)
        return version

    def _run_file(self, conn: Connection, path: Path) -> None:
        sql = path.read_text()
        dialect = conn.dialect.name
        raw = conn.connection.dbapi_connection
        assert raw is not None
        # The DBAPI cursor without parameters: no driver placeholder parsing of '%'.
        if dialect == "postgresql":  # the server splits the statements (simple protocol)
            statements = [sql] if _has_code(sql, dialect) else []
        else:
            statements = split_sql(sql, dialect)
        cur = raw.cursor()
        try:
            for s in statements:
                if work.cancelled():  # between statements of a non-transactional file
                    raise asyncio.CancelledError(f"{path.name}: the migration was cancelled")
                cur.execute(s)
        finally:
            cur.close()

    def _apply(self, engine: Engine, path: Path, target: int | None, verb: str) -> None:
        """One file, the golang-migrate way: mark ``target`` dirty (committed), then run the
        file and mark it clean in one transaction. A failure leaves the table dirty."""
        self.log(f"{verb} {path.name}")
        with engine.begin() as conn:
            self._set(conn, target, True)
        try:
            with engine.begin() as conn:
                self._run_file(conn, path)
                self._set(conn, target, False)
        except Exception as exc:
            raise MigrateError(
                f"{path.name} failed: {db_error(exc)}; {VERSION_TABLE} is left dirty at version "
                f"{-1 if target is None else target}: inspect the database, repair it, force "
                "the version, then resume"
            ) from exc

    def apply_up(self, to: int | None) -> list[int]:
        """The step: go to version ``to`` (default: the newest file) like golang-migrate's
        ``goto``; ``to: 0`` with no version 0 means "nothing applied"."""
        migs = scan_dir(self.directory)
        if to is not None and to not in migs and to != 0:
            raise MigrateError(f"to: {to} is not a migration version in {self.directory}")
        target = max(migs, default=None) if to is None else (to if to in migs else None)
        return self.goto(target, create_table=True)

    def apply_down_to(self, target: int | None) -> list[int]:
        """The undo: back to the recorded version (None: nothing applied)."""
        return self.goto(target, create_table=False)

    def goto(self, target: int | None, *, create_table: bool) -> list[int]:
        """Apply up files (oldest first) or down files (newest first) until the version is
        ``target``. At ``target`` already: nothing happens, so a re-run is safe."""
        migs = scan_dir(self.directory)
        with self._engine() as engine:
            if create_table:
                with engine.begin() as conn:
                    conn.execute(
                        text(
                            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
                            "(version bigint not null primary key, dirty boolean not null)"
                        )
                    )
            with engine.connect() as conn:
                current, dirty = self._read(conn)
            if dirty:
                raise self._dirty_error(current)
            if current == target:
                self.log(f"already at version {_shown(target)}: nothing to do")
                return []
            for v, what in ((current, "the database is at"), (target, "the target is")):
                if v is not None and v not in migs:
                    raise MigrateError(f"{what} version {v}, which is not in {self.directory}")
            if current is None or (target is not None and target > current):
                return self._up_to(engine, migs, current, target)
            return self._down_to(engine, migs, current, target)

    def _up_to(
        self, engine: Engine, migs: dict[int, _Migration], current: int | None, target: int | None
    ) -> list[int]:
        pending = [
            v
            for v in sorted(migs)
            if (current is None or v > current) and (target is None or v <= target)
        ]
        for v in pending:
            up = migs[v].up
            assert up is not None
            self._apply(engine, up, v, "applying")
        return pending

    def _down_to(
        self, engine: Engine, migs: dict[int, _Migration], current: int, target: int | None
    ) -> list[int]:
        versions = sorted(v for v in migs if v <= current)
        done: list[int] = []
        for i in range(len(versions) - 1, -1, -1):
            v = versions[i]
            if target is not None and v <= target:
                break
            prev = versions[i - 1] if i > 0 else None
            down = migs[v].down
            if down is None:
                raise MigrateError(
                    f"version {v} in {self.directory} has no .down.sql file: cannot migrate "
                    f"below it; the database stays at version {v}"
                )
            # golang-migrate marks the version it goes *to* dirty while a down file runs.
            self._apply(engine, down, prev, "reverting")
            done.append(v)
        return done


# --- alembic ---------------------------------------------------------------------------------
class _CaptureAlembicLog(logging.Filter):
    """Forwards alembic's log records emitted by one thread to the step's log. A logger filter,
    not a handler: ``logging.config.fileConfig`` in env.py drops handlers but keeps filters."""

    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread == self.thread:
            with contextlib.suppress(Exception):
                self.log(record.getMessage())
        return True


_ALEMBIC_LOGGERS = ("alembic.runtime.migration", "alembic.env", "alembic")


@contextlib.contextmanager
def _alembic_logging(log: Log) -> Iterator[None]:
    """Capture alembic's log lines; afterwards put the process's logging back as it was
    (env.py usually calls ``fileConfig``, which reconfigures every logger)."""
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers), list(root.filters))
    saved: dict[str, tuple[int, list[logging.Handler], list[Any], bool, bool]] = {}
    for name, lg in list(manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            saved[name] = (lg.level, list(lg.handlers), list(lg.filters), lg.propagate, lg.disabled)
    capture = _CaptureAlembicLog(log)
    loggers = [logging.getLogger(n) for n in _ALEMBIC_LOGGERS]
    migration_logger = loggers[0]
    migration_logger.setLevel(logging.INFO)
    for lg in loggers:
        lg.addFilter(capture)
    try:
        yield
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        root.filters[:] = saved_root[2]
        for name, lg in list(manager.loggerDict.items()):
            if not isinstance(lg, logging.Logger):
                continue
            if name in saved:
                level, handlers, filters, propagate, disabled = saved[name]
                lg.setLevel(level)
                lg.handlers[:] = handlers
                lg.filters[:] = filters
                lg.propagate, lg.disabled = propagate, disabled
            else:  # created by env.py or alembic during the run
                lg.filters[:] = [f for f in lg.filters if f is not capture]


class Alembic:
    """alembic through its Python API, with ``sqlalchemy.url`` set from the target."""

    def __init__(self, config: Path, url: str, log: Log, revision: str = "head") -> None:
        self.config_path = config
        self.url = url
        self.log = log
        self.revision = revision

    async def current(self) -> str | None:
        return await _in_thread(self.read_current)

    async def up(self) -> None:
        await _in_thread(self.upgrade, self.revision)

    async def down_to(self, target: Any) -> None:
        await _in_thread(self.downgrade_to, None if target is None else str(target))

    def _config(self) -> Any:
        from alembic.config import Config

        if not self.config_path.is_file():
            raise MigrateError(f"alembic config {self.config_path} does not exist")
        out = io.StringIO()
        cfg = Config(str(self.config_path), stdout=out)
        # ConfigParser interpolation: a literal % is written %%.
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        cfg.attributes["configure_logger"] = False  # honoured by env.py files that check it
        cfg.attributes["tminus_stdout"] = out
        return cfg

    def _flush(self, cfg: Any) -> None:
        for line in cfg.attributes["tminus_stdout"].getvalue().splitlines():
            self.log(line)

    def read_current(self) -> str | None:
        """The current revision(s), read through env.py (its URL, version table and schema)."""
        from alembic.runtime.environment import EnvironmentContext
        from alembic.script import ScriptDirectory

        cfg = self._config()
        script = ScriptDirectory.from_config(cfg)
        heads: list[str] = []
        called = False

        def fn(rev: Any, context: Any) -> list[Any]:
            nonlocal called
            called = True
            heads.extend(context.get_current_heads())
            return []

        with (
            _alembic_logging(lambda _line: None),
            EnvironmentContext(cfg, script, fn=fn, dont_mutate=True),
        ):
            script.run_env()
        if not called:
            raise MigrateError(
                f"the env.py of {self.config_path} did not run migrations online; "
                "cannot read the current revision"
            )
        return ",".join(sorted(heads)) or None

    def upgrade(self, revision: str) -> None:
        from alembic import command

        cfg = self._config()
        with _alembic_logging(self.log):
            command.upgrade(cfg, revision)
        self._flush(cfg)

    def downgrade_to(self, before: str | None) -> None:
        from alembic import command

        now = self.read_current()
        if now == before:
            self.log(f"already at revision {_shown(before)}: nothing to undo")
            return
        if before is not None and "," in before:
            raise MigrateError(
                f"alembic had several heads before the migration ({before}); "
                "downgrade to them by hand"
            )
        cfg = self._config()
        with _alembic_logging(self.log):
            command.downgrade(cfg, before or "base")
        self._flush(cfg)


# --- command ---------------------------------------------------------------------------------
class Commands:
    """Shell commands: ``up``, ``down`` (target in ``$TMINUS_VERSION``), ``version``."""

    def __init__(self, step: MigrateStep, ctx: StepContext, url: str, log: Log) -> None:
        self.step = step
        self.ctx = ctx
        self.log = log
        self.env = {"TMINUS_DEPLOY_ID": ctx.deploy_id, "TMINUS_DATABASE_URL": url}

    async def _run(self, what: str, command: str, env: dict[str, str]) -> str:
        r = self.ctx.resolver
        run = await LocalHost().run(
            r.resolve_shell(command),
            env={**self.env, **env},
            on_line=lambda _stream, line: self.log(line),
        )
        if not run.ok:
            tail = (run.stderr.strip() or run.stdout.strip())[-500:]
            status = "timed out" if run.timed_out else f"exit status {run.exit_status}"
            raise MigrateError(f"{what} command failed: {status}" + (f": {tail}" if tail else ""))
        return run.stdout

    async def current(self) -> str | None:
        if not self.step.version:
            return None
        out = await self._run("version", self.step.version, {})
        return out.strip() or None

    async def up(self) -> None:
        assert self.step.up is not None
        await self._run("up", self.step.up, {})

    async def down_to(self, target: Any) -> None:
        before = None if target is None else str(target)
        if not self.step.down:
            raise MigrateError(
                "this migrate step has no 'down' command, so it cannot be undone: migrate down "
                "by hand (set on_rollback: none or restore to say so in the plan)"
            )
        if self.step.version:
            now = await self.current()
            if now == before:
                self.log(f"already at version {_shown(before)}: nothing to undo")
                return
        await self._run("down", self.step.down, {"TMINUS_VERSION": before or ""})


# --- the kind --------------------------------------------------------------------------------
class MigrateKind(StepKindBase):
    kind: ClassVar[str] = "migrate"

    async def execute(self, step: MigrateStep, ctx: StepContext) -> StepOutcome:
        r = ctx.resolver
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        lines: list[str] = []

        def log(line: str) -> None:
            masked = r.mask(line)
            lines.append(masked)
            if threading.get_ident() == loop_thread:
                ctx.log(masked)
            else:
                loop.call_soon_threadsafe(ctx.log, masked)

        artifacts: dict[str, Any] = {"tool": step.tool}
        try:
            key = _down_key(step)
            if key is None:
                await self._up(step, ctx, log, artifacts)
            else:
                await self._down(step, ctx, key, log, artifacts)
        except MigrateError as exc:
            return StepOutcome(False, "\n".join(lines), r.mask(str(exc)), artifacts)
        except Exception as exc:  # driver, alembic and resolve errors vary
            return StepOutcome(False, "\n".join(lines), r.mask(db_error(exc)), artifacts)
        return StepOutcome(True, "\n".join(lines), None, artifacts)

    # the three tools behind one interface: current(), up(), down_to(version)
    def _tool(self, step: MigrateStep, ctx: StepContext, log: Log) -> _Tool:
        r = ctx.resolver
        db = ctx.plan.targets.databases.get(step.database)
        if db is None:
            raise MigrateError(f"database target '{step.database}' is not declared")
        url = r.resolve(db.url)
        if step.tool == "alembic":
            assert step.config is not None
            return Alembic(Path(r.resolve(step.config)), url, log, r.resolve(step.revision))
        if step.tool == "sql_dir":
            assert step.dir is not None
            return SqlDir(db.kind, url, Path(r.resolve(step.dir)), log, step.to)
        return Commands(step, ctx, url, log)

    async def _up(
        self, step: MigrateStep, ctx: StepContext, log: Log, artifacts: dict[str, Any]
    ) -> None:
        path = record_path(ctx.state_dir, ctx.deploy_id, ctx.key)
        _mark_started(path, step, ctx)
        tool = self._tool(step, ctx, log)
        now = await tool.current()
        artifacts["before"] = _record_before(path, now)
        log(f"version before: {_shown(now)}")
        if artifacts["before"] != now:
            log(f"version before the first attempt (kept for rollback): {artifacts['before']}")
        await tool.up()
        artifacts["after"] = await tool.current()
        log(f"version after: {_shown(artifacts['after'])}")

    async def _down(
        self,
        step: MigrateStep,
        ctx: StepContext,
        key: str,
        log: Log,
        artifacts: dict[str, Any],
    ) -> None:
        path = record_path(ctx.state_dir, ctx.deploy_id, key)
        rec = _read_record(path)
        if rec is None:
            raise MigrateError(
                f"no before-version was recorded for step {key} ({path} is missing: the state "
                "directory was lost, or this runs on another machine); check the database "
                "and migrate it down by hand"
            )
        if not rec.get("known"):
            log(f"step {key} never changed the database: nothing to undo")
            return
        target = rec.get("before")
        artifacts["target"] = target
        tool = self._tool(step, ctx, log)
        log(f"returning to version {_shown(target)}, recorded before step {key}")
        await tool.down_to(target)
        artifacts["after"] = await tool.current()
        log(f"version after: {_shown(artifacts['after'])}")

    def compensation(self, step: MigrateStep, ctx: StepContext) -> Compensation | None:
        if _down_key(step) is not None or step.on_rollback == "none":
            return None
        if step.on_rollback == "restore":
            restore = RestoreStep.model_validate(
                {
                    "kind": "restore",
                    "from": step.backup,
                    "database": step.database,
                    "name": f"Restore {step.database} from backup '{step.backup}'",
                    # Restoring the same verified backup again gives the same data.
                    "idempotent": True,
                }
            )
            return Compensation(restore, partial_ok=True)
        down = step.model_copy(
            update={
                "id": None,
                "name": f"Migrate {step.database} back down (undo of: {step.title()})",
                "revision": BEFORE_PREFIX + ctx.key,
                "on_rollback": "none",
                # Without a version command the down of the command tool cannot tell whether
                # it already ran: a crash in the middle pauses for the operator instead.
                "idempotent": step.tool != "command" or step.version is not None,
                "undo": [],
            }
        )
        return Compensation(down, partial_ok=True)

    def describe(self, step: MigrateStep, resolver: Resolver) -> str:
        key = _down_key(step)
        if step.tool == "alembic":
            what = (
                f"alembic downgrade to the revision recorded before {key}"
                if key is not None
                else f"alembic upgrade {resolver.resolve(step.revision)}"
            )
            where = f"(config {resolver.resolve(step.config or '')})"
        elif step.tool == "sql_dir":
            goal = "the newest version" if step.to is None else f"version {step.to}"
            what = (
                f"sql_dir back to the version recorded before {key}"
                if key is not None
                else f"sql_dir to {goal}"
            )
            where = f"(dir {resolver.resolve(step.dir or '')})"
        else:
            cmd = step.down if key is not None else step.up
            what = (
                f"command down to the version recorded before {key}"
                if key is not None
                else "command up"
            )
            try:
                shown = resolver.resolve_shell(cmd) if cmd else None
            except ResolveError:  # shown as written; running it reports why it cannot run
                shown = cmd
            where = f"($ {shown})" if cmd else "(no down command)"
        return resolver.mask(f"{what} on {step.database} {where}")


KIND = MigrateKind()
