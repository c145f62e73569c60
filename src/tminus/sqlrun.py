"""Run SQL against a database target URL (sqlite:///…, postgresql://…, mysql://…, mariadb://…).

Cancellation (see :mod:`tminus.work`): every SQLAlchemy connection checked out inside
:func:`tminus.work.in_thread` registers a cancel callback that stops its running statement
on the server (PostgreSQL: the libpq cancel request; MariaDB/MySQL: ``KILL QUERY`` from a
second connection; SQLite: ``interrupt()``), so the transaction rolls back. The statements
run here also check :func:`tminus.work.cancelled` between statements and before the commit.
PostgreSQL sessions opened there set ``client_connection_check_interval`` (14+), so the
server also stops a statement whose runner was killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Literal

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.pool import Pool

from tminus import work
from tminus.plan.sqlbind import Bound

__all__ = [
    "cancel_on_cancel",
    "db_error",
    "engine_url",
    "pg_session_setup",
    "run_query",
    "run_statements",
]

#: How soon PostgreSQL notices that the client of a running statement went away.
PG_CHECK_INTERVAL = "2s"


def _mysql_kill_query(raw: Any) -> None:
    """``KILL QUERY`` the statement of PyMySQL connection ``raw``, from a second connection."""
    import pymysql  # type: ignore[import-untyped]

    if not raw.open:
        return
    thread_id = raw.thread_id()
    killer = pymysql.connect(
        host=raw.host,
        port=raw.port,
        user=raw.user,
        password=raw.password,
        unix_socket=raw.unix_socket,
        connect_timeout=5,
        autocommit=True,
    )
    try:
        with killer.cursor() as cur:
            cur.execute(f"KILL QUERY {int(thread_id)}")
    finally:
        killer.close()


def dbapi_canceller(raw: Any) -> Callable[[], None] | None:
    """A callback, safe to call from another thread, that cancels the statement running on
    DB-API connection ``raw`` (psycopg 3, PyMySQL or sqlite3); None for other drivers."""
    if isinstance(raw, sqlite3.Connection):
        return raw.interrupt
    module = type(raw).__module__
    if module.startswith("psycopg"):
        return lambda: raw.cancel_safe(timeout=5)
    if module.startswith("pymysql"):
        return lambda: _mysql_kill_query(raw)
    return None


def cancel_on_cancel(raw: Any) -> Callable[[], None]:
    """Register ``raw``'s statement cancel in the current :func:`tminus.work.in_thread` scope
    until the returned function is called (typically when the connection is closed)."""
    cancel = dbapi_canceller(raw)
    if cancel is None or not work.in_scope():
        return lambda: None
    return work.add_cancel(cancel)


def pg_session_setup(raw: Any) -> None:
    """On PostgreSQL 14+ (Linux servers): ``client_connection_check_interval``, so that the
    server cancels a statement whose client is gone (a runner killed by SIGKILL)."""
    if getattr(getattr(raw, "info", None), "server_version", 0) < 140000:
        return
    try:
        raw.execute(f"SET client_connection_check_interval = '{PG_CHECK_INTERVAL}'")
    except Exception:  # unsupported on this server's platform: nothing lost
        with contextlib.suppress(Exception):
            raw.rollback()
    else:
        if not raw.autocommit:
            raw.commit()


@event.listens_for(Pool, "connect")
def _on_connect(raw: Any, record: Any) -> None:
    if work.in_scope() and type(raw).__module__.startswith("psycopg"):
        pg_session_setup(raw)


@event.listens_for(Pool, "checkout")
def _on_checkout(raw: Any, record: Any, proxy: Any) -> None:
    record.info["tminus_uncancel"] = cancel_on_cancel(raw)


@event.listens_for(Pool, "checkin")
def _on_checkin(raw: Any, record: Any) -> None:
    uncancel = record.info.pop("tminus_uncancel", None) if record is not None else None
    if uncancel is not None:
        uncancel()


def _check_cancelled() -> None:
    if work.cancelled():
        raise asyncio.CancelledError("the statement was cancelled")


def db_error(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's wrapping and links."""
    orig = getattr(exc, "orig", None)
    inner = orig if orig is not None else exc
    text = str(inner).strip()
    return f"{type(inner).__name__}: {text.splitlines()[0] if text else ''}"


def engine_url(kind: str, url: str) -> str:
    """The SQLAlchemy URL for a target URL: psycopg for PostgreSQL, PyMySQL for MySQL and
    MariaDB (``mysql://`` and ``mariadb://``); a URL that names its driver is kept."""
    scheme, sep, rest = url.partition("://")
    if kind == "postgres" and scheme in ("postgres", "postgresql"):
        return "postgresql+psycopg://" + rest
    if kind in ("mysql", "mariadb") and sep and scheme in ("mysql", "mariadb"):
        return "mysql+pymysql://" + rest
    return url


def _execute(conn: Connection, statement: str | Bound) -> Any:
    """Run one statement through the driver's cursor. A string runs as written, with no
    parameter list, so a ``%`` (``id % 3``) or a ``:name`` in the SQL is never taken for a
    placeholder. A :class:`~tminus.plan.sqlbind.Bound` statement's values go to the driver as
    parameters (``%(name)s`` for psycopg and PyMySQL, ``:name`` for sqlite3)."""
    _check_cancelled()
    cursor = conn.connection.cursor()
    if isinstance(statement, Bound) and statement.values:
        style: Literal["pyformat", "named"] = (
            "named" if conn.dialect.name == "sqlite" else "pyformat"
        )
        cursor.execute(statement.render(style), statement.values)
    else:
        cursor.execute(statement.render("named") if isinstance(statement, Bound) else statement)
    _check_cancelled()  # MariaDB: a killed SLEEP() returns 1 instead of failing
    return cursor


def _count(cursor: Any) -> int:
    n = max(cursor.rowcount or 0, 0)
    cursor.close()
    return int(n)


def run_query(kind: str, url: str, query: str | Bound) -> list[tuple[Any, ...]]:
    engine = create_engine(engine_url(kind, url))
    try:
        with engine.connect() as conn:
            cursor = _execute(conn, query)
            rows = [tuple(r) for r in cursor.fetchall()] if cursor.description else []
            cursor.close()
            return rows
    finally:
        engine.dispose()


def run_statements(
    kind: str, url: str, statements: Sequence[str | Bound], *, transaction: bool
) -> int:
    """Run statements (in one transaction, or each committed alone); the affected row count."""
    engine = create_engine(engine_url(kind, url))
    total = 0
    try:
        with engine.connect() as conn:
            if transaction:
                with conn.begin():
                    for s in statements:
                        total += _count(_execute(conn, s))
                    _check_cancelled()  # never commit cancelled work
            else:
                for s in statements:
                    with conn.begin():
                        total += _count(_execute(conn, s))
    finally:
        engine.dispose()
    return total
