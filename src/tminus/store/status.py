"""The reads of the public status page of ``tminus serve`` (``serve/status_page.py``).

Two cheap queries per page: :meth:`StatusMixin.status_deploys` (the deploys to consider, each
with its T-0, without their plan text) and :meth:`StatusMixin.status_messages` (the rule
messages recorded in the outbox for some of them). A plan's text is read only for a plan the
page has not seen yet (:meth:`StatusMixin.plan_text_of`). Nothing here writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select

from tminus.store import schema as t
from tminus.store._connect import StoreBase
from tminus.store._rows import _row

__all__ = ["StatusMixin"]

_ENDED = ("succeeded", "rolled_back", "failed", "aborted")
_T0_EVENTS = ("deploy.scheduled", "deploy.rescheduled")


class StatusMixin(StoreBase):
    """Read-only queries of the status page."""

    def status_deploys(self, ended_since: datetime, limit: int = 200) -> list[dict[str, Any]]:
        """Deploys not ended, and those that ended since ``ended_since``, newest first: id,
        plan name and hash, environment, state, created/updated/finished/due times, and
        ``t0_data``: the data of the newest ``deploy.scheduled``/``deploy.rescheduled``
        event (``{"at": T-0, …}``), or None for a deploy never scheduled. One query."""
        e = t.events.alias("t0_events")
        newest = (
            select(func.max(e.c.seq))
            .where(e.c.deploy_id == t.deploys.c.id, e.c.type.in_(_T0_EVENTS))
            .correlate(t.deploys)
            .scalar_subquery()
        )
        q = (
            select(
                t.deploys.c.id,
                t.deploys.c.plan_name,
                t.deploys.c.plan_hash,
                t.deploys.c.environment,
                t.deploys.c.state,
                t.deploys.c.created_at,
                t.deploys.c.updated_at,
                t.deploys.c.finished_at,
                t.deploys.c.due_at,
                t.events.c.data.label("t0_data"),
            )
            .select_from(t.deploys.outerjoin(t.events, t.events.c.seq == newest))
            .where(
                or_(
                    t.deploys.c.state.notin_(_ENDED),
                    and_(t.deploys.c.state.in_(_ENDED), t.deploys.c.updated_at >= ended_since),
                )
            )
            .order_by(t.deploys.c.created_at.desc(), t.deploys.c.id)
            .limit(limit)
        )
        with self._read() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    def status_messages(self, deploy_ids: list[str]) -> list[dict[str, Any]]:
        """The messages of notification rules recorded in the outbox for ``deploy_ids``
        (one row per message and channel: deploy id, key, channel, message, created_at),
        oldest first. ``notify`` steps' messages (``step/…``) are left out. One query."""
        if not deploy_ids:
            return []
        q = (
            select(
                t.outbox.c.deploy_id,
                t.outbox.c.key,
                t.outbox.c.channel,
                t.outbox.c.message,
                t.outbox.c.created_at,
            )
            .where(t.outbox.c.deploy_id.in_(deploy_ids), t.outbox.c.key.not_like("step/%"))
            .order_by(t.outbox.c.id)
        )
        with self._read() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    def plan_text_of(self, deploy_id: str) -> tuple[str, str] | None:
        """The plan snapshot of a deploy: (text, path)."""
        q = select(t.deploys.c.plan_text, t.deploys.c.plan_path).where(t.deploys.c.id == deploy_id)
        with self._read() as conn:
            row = conn.execute(q).first()
        return (str(row[0]), str(row[1])) if row is not None else None
