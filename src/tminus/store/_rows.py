"""Row conversions shared by the store's parts: result rows to dicts with timezone-aware
datetimes, and dicts to JSON-ready data for event payloads."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, select


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _row(row: Any) -> dict[str, Any]:
    out = dict(row)
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = _aware(v)
    return out


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


def keys_present(conn: Connection, table: Table, deploy_id: str, keys: Iterable[str]) -> set[str]:
    """Which of ``keys`` the deploy has rows for in ``table`` (its ``key`` column is the
    idempotency key of the timers and of the outbox: a key recorded again inserts nothing)."""
    q = select(table.c.key).where(table.c.deploy_id == deploy_id, table.c.key.in_(list(keys)))
    return set(conn.execute(q).scalars())
