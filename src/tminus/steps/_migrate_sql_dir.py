"""The ``sql_dir`` tool of ``kind: migrate``: golang-migrate's model (``NNN_name.up.sql`` and
``NNN_name.down.sql`` files, a one-row ``schema_migrations(version, dirty)`` table) on any
SQLAlchemy database, with the statement splitter its drivers need."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.pool import NullPool

from tminus import work
from tminus.sqlrun import db_error, engine_url
from tminus.steps._migrate_tool import Log, MigrateError, _in_thread, _shown

__all__ = ["VERSION_TABLE", "SqlDir", "scan_dir", "split_sql"]

#: golang-migrate's version table: one row, the current version and the dirty flag.
VERSION_TABLE = "schema_migrations"

_MYSQL = ("mysql", "mariadb")
_FILE_RE = re.compile(r"^(\d+)_(.+)\.(up|down)\.sql$")


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
