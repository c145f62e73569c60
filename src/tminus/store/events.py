"""The event log of the store: each deploy's timeline of what happened (``events`` table).

:meth:`EventsMixin._event` writes an event inside a caller's transaction (every other part of
the store records its changes with it); :meth:`EventsMixin.event` writes one on its own.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, insert, select

from tminus.clock import now
from tminus.store import schema as t
from tminus.store._connect import StoreBase
from tminus.store._driver import DriverTx, prepared
from tminus.store._rows import _row

__all__ = ["EventsMixin", "metric_records"]

# Statements of the per-step hot path, built once (SQLAlchemy then reuses their compiled form).
_INSERT_EVENT = insert(t.events)
_EVENT_KEYS = ("deploy_id", "ts", "type", "key", "message", "data")


class EventsMixin(StoreBase):
    """Writes and reads of deploy events."""

    def _event(
        self,
        conn: Connection | DriverTx,
        deploy_id: str,
        etype: str,
        key: str | None,
        message: str | None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """An event, in the caller's transaction (SQLAlchemy's, or the driver's: see
        :mod:`tminus.store._driver`)."""
        row = {
            "deploy_id": deploy_id,
            "ts": now(),
            "type": etype,
            "key": key,
            "message": message,
            "data": data,
        }
        if isinstance(conn, DriverTx):
            dialect = self.engine.dialect
            conn.execute(
                prepared("insert_event", dialect, lambda: (_INSERT_EVENT, _EVENT_KEYS)), row
            )
        else:
            conn.execute(_INSERT_EVENT, row)

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
            rows = conn.execute(q.order_by(t.events.c.seq)).mappings().all()
            return [_row(r) for r in rows]

    def event_mark(self, deploy_id: str, types: tuple[str, ...] = ()) -> tuple[int, int]:
        """How many events the deploy has (of ``types`` when given) and the newest one's
        sequence number: equal marks, equal events (events are never changed nor deleted,
        and a late commit of a lower number still changes the count)."""
        q = select(func.count(), func.max(t.events.c.seq)).where(t.events.c.deploy_id == deploy_id)
        if types:
            q = q.where(t.events.c.type.in_(types))
        with self._read() as conn:
            count, newest = conn.execute(q).one()
        return int(count), int(newest or 0)

    def events_after(
        self, deploy_id: str, after: int = 0, limit: int = 500
    ) -> list[dict[str, Any]]:
        """A page of the deploy's events: those after sequence number ``after``, oldest first."""
        q = (
            select(t.events)
            .where(t.events.c.deploy_id == deploy_id, t.events.c.seq > after)
            .order_by(t.events.c.seq)
            .limit(limit)
        )
        with self._read() as conn:
            return [_row(r) for r in conn.execute(q).mappings().all()]

    def events_tail(self, deploy_id: str, limit: int = 200) -> list[dict[str, Any]]:
        """The deploy's newest ``limit`` events, oldest first (a page's log: one index range,
        not the whole log of a deploy with a long watch)."""
        q = (
            select(t.events)
            .where(t.events.c.deploy_id == deploy_id)
            .order_by(t.events.c.seq.desc())
            .limit(limit)
        )
        with self._read() as conn:
            rows = [_row(r) for r in conn.execute(q).mappings().all()]
        rows.reverse()
        return rows

    def last_event_seq(self) -> int:
        """The newest event's sequence number in the whole store (0 when there is none): what
        the server's event streams poll, one cheap query for every open stream."""
        with self._read() as conn:
            return int(conn.execute(select(func.max(t.events.c.seq))).scalar() or 0)


def metric_records(
    events: list[dict[str, Any]],
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The success metrics a deploy's events record, by the metric's index: (scheduled,
    measured). ``metric.scheduled`` holds a pending metric's due time; ``metric.measured`` and
    the ``summary``'s ``metrics`` hold results (read by ``tminus status`` and the report)."""
    scheduled: dict[int, dict[str, Any]] = {}
    measured: dict[int, dict[str, Any]] = {}
    for e in events:
        data = e.get("data") or {}
        if e["type"] == "metric.scheduled" and "index" in data:
            scheduled[int(data["index"])] = data
        elif e["type"] == "metric.measured" and "index" in data:
            measured[int(data["index"])] = data
        elif e["type"] == "summary":
            for m in data.get("metrics") or []:
                if isinstance(m, dict) and "index" in m:
                    measured[int(m["index"])] = m
    return scheduled, measured
