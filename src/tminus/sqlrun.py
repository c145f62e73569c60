"""Run SQL against a database target URL (sqlite:///…, postgresql://…, mysql://…, mariadb://…)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, create_engine

__all__ = ["db_error", "engine_url", "run_query", "run_statements"]


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


def _execute(conn: Connection, statement: str) -> Any:
    """Run one statement as written: through the driver's cursor with no parameter list, so
    a ``%`` (``id % 3``) or a ``:name`` in the SQL is never taken for a placeholder."""
    cursor = conn.connection.cursor()
    cursor.execute(statement)
    return cursor


def _count(cursor: Any) -> int:
    n = max(cursor.rowcount or 0, 0)
    cursor.close()
    return int(n)


def run_query(kind: str, url: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_engine(engine_url(kind, url))
    try:
        with engine.connect() as conn:
            cursor = _execute(conn, query)
            rows = [tuple(r) for r in cursor.fetchall()] if cursor.description else []
            cursor.close()
            return rows
    finally:
        engine.dispose()


def run_statements(kind: str, url: str, statements: list[str], *, transaction: bool) -> int:
    """Run statements (in one transaction, or each committed alone); the affected row count."""
    engine = create_engine(engine_url(kind, url))
    total = 0
    try:
        with engine.connect() as conn:
            if transaction:
                with conn.begin():
                    for s in statements:
                        total += _count(_execute(conn, s))
            else:
                for s in statements:
                    with conn.begin():
                        total += _count(_execute(conn, s))
    finally:
        engine.dispose()
    return total
