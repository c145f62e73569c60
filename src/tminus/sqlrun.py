"""Run SQL against a database target URL (sqlite:///…, postgresql://…)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine

__all__ = ["db_error", "engine_url", "run_query", "run_statements"]


def db_error(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's wrapping and links."""
    orig = getattr(exc, "orig", None)
    inner = orig if orig is not None else exc
    text = str(inner).strip()
    return f"{type(inner).__name__}: {text.splitlines()[0] if text else ''}"


def engine_url(kind: str, url: str) -> str:
    if kind == "postgres" and url.split("://", 1)[0] in ("postgres", "postgresql"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if kind in ("mysql", "mariadb"):
        raise NotImplementedError(
            "SQL on MySQL/MariaDB targets arrives with the data-safety work; use a run step"
        )
    return url


def run_query(kind: str, url: str, query: str) -> list[tuple[Any, ...]]:
    engine = create_engine(engine_url(kind, url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(query)]
    finally:
        engine.dispose()


def run_statements(kind: str, url: str, statements: list[str], *, transaction: bool) -> int:
    """Run statements; returns the total affected row count."""
    engine = create_engine(engine_url(kind, url))
    total = 0
    try:
        if transaction:
            with engine.begin() as conn:
                for s in statements:
                    res = conn.exec_driver_sql(s)
                    total += max(res.rowcount or 0, 0)
        else:
            with engine.connect() as conn:
                for s in statements:
                    res = conn.exec_driver_sql(s)
                    conn.commit()
                    total += max(res.rowcount or 0, 0)
    finally:
        engine.dispose()
    return total
