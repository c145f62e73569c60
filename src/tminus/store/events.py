"""The event log of the store: each deploy's timeline of what happened (``events`` table).

:meth:`EventsMixin._event` writes an event inside a caller's transaction (every other part of
the store records its changes with it); :meth:`EventsMixin.event` writes one on its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select

from tminus.clock import now
from tminus.store import schema as t
from tminus.store._connect import StoreBase
from tminus.store._rows import _row

__all__ = ["EventsMixin"]

# Statements of the per-step hot path, built once (SQLAlchemy then reuses their compiled form).
_INSERT_EVENT = insert(t.events)


class EventsMixin(StoreBase):
    """Writes and reads of deploy events."""

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

    def events(self, deploy_id: str, *, types: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """The deploy's events, oldest first; only those of ``types`` when given."""
        q = select(t.events).where(t.events.c.deploy_id == deploy_id)
        if types:
            q = q.where(t.events.c.type.in_(types))
        with self._read() as conn:
            rows = conn.execute(q.order_by(t.events.c.seq)).mappings()
            return [_row(r) for r in rows]
