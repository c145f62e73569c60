"""The store's connection layer: the SQLAlchemy engine, the schema and the transactions.

:class:`StoreBase` creates the engine (SQLite pragmas: WAL mode with ``synchronous=NORMAL``,
BEGIN IMMEDIATE for writes; PostgreSQL with a pre-ping), creates or upgrades the schema under
an exclusive lock (a PostgreSQL advisory lock on the upgrading connection, or an ``flock`` of
``<db>.lock`` beside a SQLite file, the revision read again once the lock is held), and gives
the ``tx`` write transaction (each counted commit passes the fault point
:func:`tminus.faults.after_commit`) and the short ``_read`` transaction that the store's other
parts build on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.exc import DBAPIError, OperationalError

from tminus import faults
from tminus.errors import StoreError
from tminus.files import default_state_url

__all__ = ["HEAD_REVISION", "StoreBase"]

#: The newest Alembic revision of the schema; a test pins it to the migrations directory.
HEAD_REVISION = "0006"

#: A PostgreSQL transaction whose commit need not wait for its WAL flush (Store.tx).
_NO_FLUSH = "SET LOCAL synchronous_commit TO OFF"

#: The key of the PostgreSQL advisory lock held while the schema is created or upgraded
#: ("tminus" in ASCII). Advisory locks are per database, so stores never wait on each other.
_PG_SCHEMA_LOCK = 0x746D696E7573


def _normalize(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme.startswith("postgresql+") and scheme != "postgresql+psycopg":
        # The store writes each step's records through psycopg 3 itself (store/_driver.py).
        raise StoreError(
            f"the state store URL asks for the {scheme.split('+', 1)[1]} driver; "
            "tminus talks to PostgreSQL through psycopg 3",
            hint="write it postgresql://… (or postgresql+psycopg://…)",
        )
    if "://" not in url:  # a bare path
        return f"sqlite:///{url}"
    return url


class StoreBase:
    """The engine, the schema and the transactions of a :class:`tminus.store.store.Store`."""

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
    def tx(self, *, count: bool = True, flush: bool = True) -> Iterator[Connection]:
        """A write transaction, committed on exit. On SQLite it begins IMMEDIATE (it takes
        the write lock at once, waiting up to the busy timeout), so a transaction that reads
        then writes never fails on another writer's commit in between.

        ``count``: the commit counts as a fault point (:func:`tminus.faults.after_commit`).

        ``flush=False`` (PostgreSQL): the commit returns before the server has flushed it to
        disk (``synchronous_commit = off`` for this transaction only). It is committed all the
        same: visible at once, and kept if the runner dies (kill -9: the crash campaign);
        only a crash of the database server itself within about 3 × ``wal_writer_delay``
        can lose it, and the next flushed commit flushes it too (the WAL is written in
        order). Only for records whose loss the engine already handles as a runner crash
        just before them (see docs/architecture.md, "What is durable when"); the engine
        writes a flushed record before any effect. On SQLite every commit is the same (WAL,
        ``synchronous=NORMAL``)."""
        conn = self._connection()
        try:
            with _write_begin(conn):
                if not flush and conn.dialect.name == "postgresql":
                    conn.exec_driver_sql(_NO_FLUSH)
                yield conn
        except DBAPIError as exc:
            if exc.connection_invalidated:
                self._conn = None  # reconnect next time
            raise
        if count:
            self._after_commit()

    def _exists(self, q: Any) -> bool:
        """Does select ``q`` find a row? A read: a claim is a write transaction (on SQLite,
        BEGIN IMMEDIATE), which an idle server or runner should not take several times a
        second for nothing."""
        with self._read() as conn:
            return conn.execute(q.limit(1)).first() is not None

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
