"""Durable timers and the servers that fire them (``timers`` and ``servers`` tables, 0003).

A timer is one pending time-based action of a deploy (a T-24h notice, a watch measurement, a
success metric due): a row with a ``key`` unique per deploy. Planning it twice inserts nothing
(the key is the idempotency key of its effect). A ``tminus serve`` claims due rows with a
lease (:meth:`TimersMixin.claim_timers`: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two
servers never claim the same row; SQLite's write lock does the same for one machine), renews
the lease while it works, and marks the row done in the same transaction as the event that
records its effect (:meth:`TimersMixin.finish_timer`, which refuses when the lease was lost:
the effect is then recorded by whoever holds it, once). A server that dies leaves its leases
to expire; another claims the rows again.

``drive`` rows are the claims on *running a deploy* (start it at its time, continue it after
an approval, take it over from a dead runner): :meth:`TimersMixin.claim_drive` inserts or takes
over the row for one reason, so that one server, not two, starts the runner for it.

Timer writes are not counted as fault points (crash tests count the runner's commits).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from tminus.clock import now
from tminus.store import schema as t
from tminus.store._rows import _row, keys_present
from tminus.store.events import EventsMixin
from tminus.store.outbox import insert_outbox

__all__ = ["DRIVE", "TimersMixin"]

#: The kind of the rows that claim the running of a deploy.
DRIVE = "drive"


class TimersMixin(EventsMixin):
    """Timers (plan, claim, finish, cancel) and server heartbeats."""

    # --- planning ---------------------------------------------------------------------------
    def add_timers(self, deploy_id: str, specs: list[dict[str, Any]]) -> int:
        """Insert the timers not planned yet (``key``, ``kind``, ``due_at``, ``data``); a key
        already present is left as it is. Returns how many were inserted."""
        if not specs:
            return 0
        with self.tx(count=False) as conn:
            have = keys_present(conn, t.timers, deploy_id, (s["key"] for s in specs))
            new = [s for s in specs if s["key"] not in have]
            if new:
                conn.execute(
                    insert(t.timers),
                    [
                        {
                            "deploy_id": deploy_id,
                            "key": s["key"],
                            "kind": s["kind"],
                            # UTC: a SQLite column keeps no offset, and reads are UTC
                            "due_at": s["due_at"].astimezone(UTC),
                            "state": "pending",
                            "data": s.get("data"),
                            "attempts": 0,
                        }
                        for s in new
                    ],
                )
        return len(new)

    def timers(self, deploy_id: str, *, kinds: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        q = select(t.timers).where(t.timers.c.deploy_id == deploy_id)
        if kinds:
            q = q.where(t.timers.c.kind.in_(kinds))
        with self._read() as conn:
            rows = conn.execute(q.order_by(t.timers.c.due_at, t.timers.c.id)).mappings()
            return [_row(r) for r in rows]

    def cancel_timers(
        self, deploy_id: str, reason: str, *, kinds: tuple[str, ...] = (), prefix: str = ""
    ) -> int:
        """Cancel the deploy's pending timers (of ``kinds``; keys starting with ``prefix``)."""
        q = update(t.timers).where(
            t.timers.c.deploy_id == deploy_id,
            t.timers.c.state == "pending",
            t.timers.c.kind != DRIVE,
        )
        if kinds:
            q = q.where(t.timers.c.kind.in_(kinds))
        if prefix:
            q = q.where(t.timers.c.key.startswith(prefix, autoescape=True))
        with self.tx(count=False) as conn:
            res = conn.execute(q.values(state="cancelled", outcome=reason, fired_at=now()))
        return int(res.rowcount or 0)

    # --- firing -----------------------------------------------------------------------------
    def claim_timers(self, owner: str, lease: timedelta, limit: int = 50) -> list[dict[str, Any]]:
        """Claim up to ``limit`` due timers (not ``drive`` rows) for ``owner`` until now +
        ``lease``: pending, due, and unleased or with an expired lease. Oldest first."""
        at = now()
        free = or_(t.timers.c.lease_until.is_(None), t.timers.c.lease_until < at)
        pick = (
            select(t.timers.c.id)
            .where(
                t.timers.c.state == "pending",
                t.timers.c.due_at <= at,
                t.timers.c.kind != DRIVE,
                free,
            )
            .order_by(t.timers.c.due_at, t.timers.c.id)
            .limit(limit)
        )
        if not self._exists(pick):  # most ticks: no write transaction when nothing is due
            return []
        with self.tx(count=False) as conn:
            ids = list(conn.execute(pick.with_for_update(skip_locked=True)).scalars())
            if not ids:
                return []
            conn.execute(
                update(t.timers)
                .where(t.timers.c.id.in_(ids))
                .values(
                    lease_owner=owner,
                    lease_until=at + lease,
                    attempts=t.timers.c.attempts + 1,
                )
            )
            rows = conn.execute(
                select(t.timers).where(t.timers.c.id.in_(ids)).order_by(t.timers.c.due_at)
            ).mappings()
            return [_row(r) for r in rows]

    def renew_leases(self, owner: str, ids: list[int], lease: timedelta) -> None:
        if not ids:
            return
        with self.tx(count=False) as conn:
            conn.execute(
                update(t.timers)
                .where(t.timers.c.id.in_(ids), t.timers.c.lease_owner == owner)
                .values(lease_until=now() + lease)
            )

    def release_leases(self, owner: str) -> None:
        """A server stopping hands its claimed, unfinished rows back at once."""
        with self.tx(count=False) as conn:
            conn.execute(
                update(t.timers)
                .where(t.timers.c.lease_owner == owner, t.timers.c.state == "pending")
                .values(lease_owner=None, lease_until=None)
            )

    def finish_timer(
        self,
        timer_id: int,
        owner: str,
        state: str,
        outcome: str,
        events: list[tuple[str, str, dict[str, Any] | None]] | None = None,
        outbox: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Mark a claimed timer ``done`` or ``skipped`` with its outcome and record its events
        and its messages (``outbox`` rows) in the same transaction, only if ``owner`` still
        holds it: False when the lease was lost (someone else records the effect, once)."""
        with self.tx(count=False) as conn:
            res = conn.execute(
                update(t.timers)
                .where(
                    t.timers.c.id == timer_id,
                    t.timers.c.lease_owner == owner,
                    t.timers.c.state == "pending",
                )
                .values(state=state, outcome=outcome, fired_at=now())
            )
            if res.rowcount != 1:  # nothing written: the transaction commits nothing
                return False
            if not events and not outbox:
                return True
            deploy_id, key = conn.execute(
                select(t.timers.c.deploy_id, t.timers.c.key).where(t.timers.c.id == timer_id)
            ).one()
            if outbox:
                insert_outbox(conn, deploy_id, outbox)
            for etype, message, data in events or []:
                self._event(conn, deploy_id, etype, key, message, data)
        return True

    # --- claims on running a deploy --------------------------------------------------------
    def claim_drive(self, deploy_id: str, key: str, owner: str, lease: timedelta) -> bool:
        """Claim the running of ``deploy_id`` for one reason (``key``): True for the one
        server that inserts the row, or takes it over once its holder's lease expired."""
        at = now()
        try:
            with self.tx(count=False) as conn:
                conn.execute(
                    insert(t.timers).values(
                        deploy_id=deploy_id,
                        key=key,
                        kind=DRIVE,
                        due_at=at,
                        state="pending",
                        lease_owner=owner,
                        lease_until=at + lease,
                        attempts=1,
                    )
                )
            return True
        except IntegrityError:
            pass
        with self.tx(count=False) as conn:
            res = conn.execute(
                update(t.timers)
                .where(
                    t.timers.c.deploy_id == deploy_id,
                    t.timers.c.key == key,
                    t.timers.c.state == "pending",
                    or_(t.timers.c.lease_until.is_(None), t.timers.c.lease_until < at),
                )
                .values(lease_owner=owner, lease_until=at + lease, attempts=t.timers.c.attempts + 1)
            )
            return res.rowcount == 1

    def drive_requests(self, prefix: str) -> list[dict[str, Any]]:
        """Runs asked of any server (``drive`` rows whose key starts with ``prefix``, pending
        and never claimed: ``tminus rollback``/``abort`` handed over by the CLI), oldest
        first. A server takes one with :meth:`claim_drive` under its key."""
        q = select(t.timers).where(
            t.timers.c.state == "pending",
            t.timers.c.kind == DRIVE,
            t.timers.c.attempts == 0,  # never claimed (a claim released stays claimed once)
            t.timers.c.key.startswith(prefix, autoescape=True),
        )
        with self._read() as conn:
            rows = conn.execute(q.order_by(t.timers.c.due_at, t.timers.c.id)).mappings()
            return [_row(r) for r in rows]

    def withdraw_drive(self, deploy_id: str, key: str, reason: str = "withdrawn") -> bool:
        """Cancel a run asked of the servers that none has claimed yet; False once one has."""
        with self.tx(count=False) as conn:
            res = conn.execute(
                update(t.timers)
                .where(
                    t.timers.c.deploy_id == deploy_id,
                    t.timers.c.key == key,
                    t.timers.c.state == "pending",
                    t.timers.c.attempts == 0,
                )
                .values(state="cancelled", outcome=reason, fired_at=now())
            )
            return res.rowcount == 1

    def renew_drive(self, deploy_id: str, key: str, owner: str, lease: timedelta) -> bool:
        """Extend ``owner``'s claim while its worker runs; False if it lost the claim."""
        with self.tx(count=False) as conn:
            res = conn.execute(
                update(t.timers)
                .where(
                    t.timers.c.deploy_id == deploy_id,
                    t.timers.c.key == key,
                    t.timers.c.lease_owner == owner,
                    t.timers.c.state == "pending",
                )
                .values(lease_until=now() + lease)
            )
            return res.rowcount == 1

    def finish_drive(self, deploy_id: str, key: str, owner: str, outcome: str) -> None:
        with self.tx(count=False) as conn:
            conn.execute(
                update(t.timers)
                .where(
                    t.timers.c.deploy_id == deploy_id,
                    t.timers.c.key == key,
                    t.timers.c.lease_owner == owner,
                )
                .values(state="done", outcome=outcome, fired_at=now())
            )

    # --- the deploys a server looks after -----------------------------------------------------
    def serve_deploys(self, succeeded_since: datetime) -> list[dict[str, Any]]:
        """Deploys not ended, and those that succeeded since ``succeeded_since`` (their watch
        and notices after success), without their plan text; each with ``gate_at``: the
        newest approval or checklist confirmation recorded."""
        appr = (
            select(func.max(t.approvals.c.ts))
            .where(t.approvals.c.deploy_id == t.deploys.c.id)
            .scalar_subquery()
        )
        conf = (
            select(func.max(t.confirmations.c.ts))
            .where(t.confirmations.c.deploy_id == t.deploys.c.id)
            .scalar_subquery()
        )
        cols = [c for c in t.deploys.c if c.name != "plan_text"]
        q = select(*cols, appr.label("approved_at"), conf.label("confirmed_at")).where(
            or_(
                t.deploys.c.state.notin_(["succeeded", "rolled_back", "failed", "aborted"]),
                and_(t.deploys.c.state == "succeeded", t.deploys.c.updated_at >= succeeded_since),
            )
        )
        with self._read() as conn:
            found = conn.execute(q.order_by(t.deploys.c.created_at)).mappings()
            rows = [_row(r) for r in found]
        for r in rows:
            times = [x for x in (r.pop("approved_at"), r.pop("confirmed_at")) if x is not None]
            r["gate_at"] = max(times) if times else None
        return rows

    def deploy_counts(self) -> dict[str, int]:
        """Deploys by stored state (``/metrics``)."""
        q = select(t.deploys.c.state, func.count()).group_by(t.deploys.c.state)
        with self._read() as conn:
            return {str(s): int(n) for s, n in conn.execute(q)}

    def step_durations(self) -> list[tuple[str, float]]:
        """(kind, seconds) of every finished step (``/metrics``)."""
        q = select(t.steps.c.kind, t.steps.c.started_at, t.steps.c.ended_at).where(
            t.steps.c.started_at.is_not(None),
            t.steps.c.ended_at.is_not(None),
            t.steps.c.kind != "-",  # gates (checklist, approvals), not steps
        )
        with self._read() as conn:
            return [
                (str(k), max(0.0, (e - s).total_seconds()))
                for k, s, e in conn.execute(q)
                if s is not None and e is not None
            ]

    def event_count(self, etype: str) -> int:
        with self._read() as conn:
            q = select(func.count()).where(t.events.c.type == etype)
            return int(conn.execute(q).scalar_one())

    def watch_outcomes(self) -> dict[str, int]:
        """Watch measurements by status (``/metrics``)."""
        q = select(t.events.c.data).where(t.events.c.type == "watch.measurement")
        out: dict[str, int] = {}
        with self._read() as conn:
            for (data,) in conn.execute(q):
                status = str((data or {}).get("status", "unknown"))
                out[status] = out.get(status, 0) + 1
        return out

    # --- figures ------------------------------------------------------------------------------
    def timer_figures(self, late_after: timedelta) -> dict[str, int]:
        """Pending timers (not ``drive`` rows), and how many of them are late."""
        at = now()
        base = and_(t.timers.c.state == "pending", t.timers.c.kind != DRIVE)
        with self._read() as conn:
            pending = conn.execute(select(func.count()).where(base)).scalar_one()
            late = conn.execute(
                select(func.count()).where(base, t.timers.c.due_at < at - late_after)
            ).scalar_one()
        return {"pending": int(pending), "late": int(late)}

    # --- servers ------------------------------------------------------------------------------
    def server_beat(
        self, server_id: str, pid: int, bind: str | None, url: str | None = None
    ) -> None:
        """Record (or refresh) a serve process of this store (``url``: its dashboard's
        address as its users reach it, for the links in notifications)."""
        at = now()
        with self.tx(count=False) as conn:
            res = conn.execute(
                update(t.servers)
                .where(t.servers.c.id == server_id)
                .values(heartbeat_at=at, stopped_at=None, url=url)
            )
            if res.rowcount == 0:
                conn.execute(
                    insert(t.servers).values(
                        id=server_id,
                        host=socket.gethostname(),
                        pid=pid,
                        bind=bind,
                        url=url,
                        started_at=at,
                        heartbeat_at=at,
                    )
                )

    def server_stopped(self, server_id: str) -> None:
        with self.tx(count=False) as conn:
            conn.execute(
                update(t.servers).where(t.servers.c.id == server_id).values(stopped_at=now())
            )

    def dashboard_url(self, max_age: timedelta) -> str | None:
        """The address of the dashboard of a live server of this store that was told one
        (``tminus serve --url``), without a trailing slash; None if none was."""
        for s in self.live_servers(max_age):
            if s.get("url"):
                return str(s["url"]).rstrip("/")
        return None

    def live_servers(self, max_age: timedelta) -> list[dict[str, Any]]:
        """Serve processes that beat within ``max_age`` and did not stop."""
        q = select(t.servers).where(
            t.servers.c.stopped_at.is_(None), t.servers.c.heartbeat_at >= now() - max_age
        )
        with self._read() as conn:
            return [_row(r) for r in conn.execute(q.order_by(t.servers.c.started_at)).mappings()]
