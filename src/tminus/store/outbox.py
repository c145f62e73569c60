"""The outbox: every notification is recorded before it is sent (``outbox`` table, 0004).

One row is one message to one channel, keyed by (deploy, ``key``): the idempotency key of
(rule, occurrence, channel), so recording the same message twice inserts one row. A sender
(the deploy's runner, or ``tminus serve``) claims due rows with a lease, sends, and records
the receiver's answer: *sent*, or *pending* again with the next attempt's time (backoff), or
*failed* for good. A row is sent by the holder of its lease only, so at most once, whatever
crashes and however many senders there are; a crash between sending and recording leaves
the row *pending* with its lease, sent again when the lease expires: that window, one
receiver round trip, is the only way a message can arrive twice (said in docs).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from tminus.clock import now
from tminus.store import schema as t
from tminus.store._rows import _row, keys_present
from tminus.store.events import EventsMixin

__all__ = ["OutboxMixin", "insert_outbox"]


def _aware(at: datetime) -> datetime:
    """SQLite gives back naive times (stored in UTC)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def insert_outbox(conn: Connection, deploy_id: str, rows: list[dict[str, Any]]) -> int:
    """Insert the rows (``key``, ``channel``, ``kind``, ``message``) whose key the deploy has
    not recorded yet, in the caller's transaction; how many were new."""
    if not rows:
        return 0
    at = now()
    have = keys_present(conn, t.outbox, deploy_id, (r["key"] for r in rows))
    new = [r for r in rows if r["key"] not in have]
    if new:
        conn.execute(
            insert(t.outbox),
            [
                {
                    "deploy_id": deploy_id,
                    "key": r["key"],
                    "channel": r["channel"],
                    "kind": r["kind"],
                    "message": r["message"],
                    "state": "pending",
                    "attempts": 0,
                    "next_at": at,
                    "created_at": at,
                }
                for r in new
            ],
        )
    return len(new)


class OutboxMixin(EventsMixin):
    """Record, claim and settle notifications."""

    def enqueue(
        self,
        deploy_id: str,
        rows: list[dict[str, Any]],
        event: tuple[str, str, dict[str, Any] | None] | None = None,
        *,
        event_key: str | None = None,
    ) -> int:
        """Record messages (``key``, ``channel``, ``kind``, ``message``) not recorded yet, and
        ``event`` (with ``event_key``) with them, in one transaction. Returns how many rows
        were new."""
        with self.tx(count=False) as conn:
            n = insert_outbox(conn, deploy_id, rows)
            if event is not None and (n or not rows):
                etype, message, data = event
                self._event(conn, deploy_id, etype, event_key, message, data)
        return n

    def claim_outbox(
        self, owner: str, lease: timedelta, *, deploy_id: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Claim due pending messages (of one deploy, or all) for ``owner``."""
        at = now()
        pick = (
            select(t.outbox.c.id)
            .where(
                t.outbox.c.state == "pending",
                t.outbox.c.next_at <= at,
                or_(t.outbox.c.lease_until.is_(None), t.outbox.c.lease_until < at),
            )
            .order_by(t.outbox.c.next_at, t.outbox.c.id)
            .limit(limit)
        )
        if deploy_id is not None:
            pick = pick.where(t.outbox.c.deploy_id == deploy_id)
        if not self._exists(pick):  # a runner asks twice a second: no write for nothing
            return []
        with self.tx(count=False) as conn:
            ids = list(conn.execute(pick.with_for_update(skip_locked=True)).scalars())
            if not ids:
                return []
            conn.execute(
                update(t.outbox)
                .where(t.outbox.c.id.in_(ids))
                .values(lease_owner=owner, lease_until=at + lease)
            )
            rows = conn.execute(
                select(t.outbox).where(t.outbox.c.id.in_(ids)).order_by(t.outbox.c.id)
            ).mappings()
            return [_row(r) for r in rows]

    def take(self, row_id: int, owner: str, lease: timedelta) -> bool:
        """Just before sending a claimed row: renew ``owner``'s lease from now, only if it still
        holds it (its lease not run out, the row still pending). False: another sender may
        have it now, so this one must not send it (a message late in a slow lane would
        otherwise be sent by two senders)."""
        at = now()
        with self.tx(count=False) as conn:
            res = conn.execute(
                update(t.outbox)
                .where(
                    t.outbox.c.id == row_id,
                    t.outbox.c.lease_owner == owner,
                    t.outbox.c.lease_until >= at,
                    t.outbox.c.state == "pending",
                )
                .values(lease_until=at + lease)
            )
            return bool(res.rowcount)

    def settle(
        self,
        row_id: int,
        owner: str,
        *,
        state: str,
        detail: str,
        ref: str | None = None,
        next_at: datetime | None = None,
        event: tuple[str, str, dict[str, Any] | None] | None = None,
    ) -> bool:
        """Record a send's outcome under ``owner``'s lease: ``sent``, ``failed``, or
        ``pending`` again at ``next_at``; with ``event`` in the same transaction."""
        values: dict[str, Any] = {
            "state": state,
            "detail": detail,
            "attempts": t.outbox.c.attempts + 1,
            "lease_owner": None,
            "lease_until": None,
        }
        if ref is not None:
            values["ref"] = ref
        if state == "sent":
            values["sent_at"] = now()
        if next_at is not None:
            values["next_at"] = next_at.astimezone(UTC)
        with self.tx(count=False) as conn:
            res = conn.execute(
                update(t.outbox)
                .where(
                    t.outbox.c.id == row_id,
                    t.outbox.c.lease_owner == owner,
                    t.outbox.c.state == "pending",
                )
                .values(**values)
            )
            if res.rowcount != 1:
                return False
            if event is not None:
                deploy_id = conn.execute(
                    select(t.outbox.c.deploy_id).where(t.outbox.c.id == row_id)
                ).scalar_one()
                etype, message, data = event
                self._event(conn, deploy_id, etype, None, message, data)
        return True

    def hold(self, row_id: int, owner: str, *, next_at: datetime, detail: str) -> bool:
        """Put a claimed message back, unsent and without counting an attempt, until
        ``next_at`` (a channel's rate limit holds it), with why in ``detail``."""
        with self.tx(count=False) as conn:
            res = conn.execute(
                update(t.outbox)
                .where(
                    t.outbox.c.id == row_id,
                    t.outbox.c.lease_owner == owner,
                    t.outbox.c.state == "pending",
                )
                .values(
                    next_at=next_at.astimezone(UTC),
                    detail=detail,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            return bool(res.rowcount == 1)

    def sent_since(self, deploy_id: str, channel: str, since: datetime) -> list[datetime]:
        """When the messages of the deploy's ``channel`` sent after ``since`` were sent,
        oldest first (a rate limit's window)."""
        q = (
            select(t.outbox.c.sent_at)
            .where(
                t.outbox.c.deploy_id == deploy_id,
                t.outbox.c.channel == channel,
                t.outbox.c.state == "sent",
                t.outbox.c.sent_at > since,
            )
            .order_by(t.outbox.c.sent_at)
        )
        with self._read() as conn:
            return [_aware(at) for at in conn.execute(q).scalars()]

    def release_outbox(self, owner: str) -> None:
        """A sender stopping hands back the messages it claimed and did not settle."""
        with self.tx(count=False) as conn:
            conn.execute(
                update(t.outbox)
                .where(t.outbox.c.lease_owner == owner, t.outbox.c.state == "pending")
                .values(lease_owner=None, lease_until=None)
            )

    def outbox(self, deploy_id: str) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                select(t.outbox).where(t.outbox.c.deploy_id == deploy_id).order_by(t.outbox.c.id)
            ).mappings()
            return [_row(r) for r in rows]

    def outbox_listing(self, deploy_id: str) -> list[dict[str, Any]]:
        """The deploy's messages as ``tminus notifications --output json`` and the API list
        them: each row's delivery state and the message's title and ``when``."""
        keys = ("id", "key", "channel", "kind", "state", "attempts", "detail", "ref")
        times = ("created_at", "sent_at", "next_at")
        return [
            {k: r[k] for k in (*keys, *times)}
            | {"title": r["message"].get("title"), "when": r["message"].get("when")}
            for r in self.outbox(deploy_id)
        ]

    def thread_ref(self, deploy_id: str, channel: str) -> str | None:
        """The receiver's reference of the first message delivered to ``channel`` for the
        deploy (a chat thread, an incident), if any."""
        q = (
            select(t.outbox.c.ref)
            .where(
                t.outbox.c.deploy_id == deploy_id,
                t.outbox.c.channel == channel,
                t.outbox.c.state == "sent",
                t.outbox.c.ref.is_not(None),
            )
            .order_by(t.outbox.c.id)
            .limit(1)
        )
        with self._read() as conn:
            ref = conn.execute(q).scalar()
        return str(ref) if ref is not None else None

    def outbox_row(self, row_id: int) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(t.outbox).where(t.outbox.c.id == row_id)).mappings().first()
        return _row(row) if row else None

    def resend(self, row_id: int) -> None:
        """Send a message again (``tminus notifications DEPLOY --resend ID``): pending now."""
        with self.tx(count=False) as conn:
            conn.execute(
                update(t.outbox)
                .where(t.outbox.c.id == row_id)
                .values(state="pending", next_at=now(), lease_owner=None, lease_until=None)
            )
