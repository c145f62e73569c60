"""Delivery of the outbox: due messages claimed, sent through their channel's notifier.

:func:`deliver_due` claims due rows, sends each through its channel's notifier
(:mod:`tminus.notifiers`), and records the receiver's answer: *sent*; *pending* again after a
backoff (:data:`BACKOFF`) when trying again could help; *failed* when it cannot (a 4xx, an
auth failure) or after :data:`MAX_ATTEMPTS`. Each outcome is an event too (``notify.sent``,
``notify.retry``, ``notify.failed``).

The deploy's runner delivers its own deploy's messages while it runs (:func:`pump`, a task
beside the run, so a slow or failing receiver never holds a step), then for at most
:data:`FLUSH_S` seconds after the run's end (:func:`flush`); ``tminus serve`` delivers every
deploy's. A message left pending is delivered by whichever comes next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.notifiers.base import Delivery, Message, SendContext, get_notifier
from tminus.plan.model import NotificationChannel, Plan, RateLimit
from tminus.registry import Unknown

if TYPE_CHECKING:
    from tminus.engine.engine import Engine
    from tminus.plan.interpolate import Resolver
    from tminus.store.store import Store

__all__ = [
    "BACKOFF",
    "FLUSH_S",
    "HELD",
    "MAX_ATTEMPTS",
    "Sent",
    "deliver_due",
    "deliver_for",
    "flush",
    "pump",
    "role_recipients",
]

#: Seconds before the 2nd, 3rd, … attempt.
BACKOFF = (2, 10, 60, 300, 1800)
MAX_ATTEMPTS = len(BACKOFF) + 1
#: A claim on a message while it is being sent.
LEASE = timedelta(seconds=60)
#: How long one attempt may take.
SEND_TIMEOUT_S = 10.0
#: How a message held by its channel's rate limit is shown (``tminus notifications``).
HELD = "held: rate limit "
#: How long a runner keeps delivering after its run ended.
FLUSH_S = 5.0
_LOG = NotificationChannel(kind="log")


@dataclass
class Sent:
    """One delivery attempt's outcome, for the console."""

    channel: str
    state: str  # sent | pending | failed | held
    detail: str
    title: str


def _message(data: dict[str, Any]) -> Message:
    return Message(
        key=str(data["key"]),
        deploy_id=str(data["deploy"]),
        plan=str(data["plan"]),
        environment=str(data["environment"]),
        when=str(data["when"]),
        title=str(data["title"]),
        text=str(data["text"]),
        severity=str(data.get("severity") or "info"),
        audience=data.get("audience"),
        state=data.get("state"),
        phase=data.get("phase"),
        link=data.get("link"),
        facts={str(k): str(v) for k, v in (data.get("facts") or {}).items()},
        at=str(data.get("at") or ""),
    )


async def _send_one(
    store: Store,
    owner: str,
    row: dict[str, Any],
    context: Callable[[str], tuple[Plan, Resolver] | None],
) -> Sent:
    message = _message(row["message"])
    got = context(row["deploy_id"])
    delivery: Delivery
    if got is None:
        delivery = Delivery(False, "the deploy's plan no longer loads", retry=False)
        mask: Callable[[str], str] = str
    else:
        plan, resolver = got
        mask = resolver.mask
        channel = plan.notifications.channels.get(row["channel"], _LOG)
        try:
            notifier = get_notifier(channel.kind)
        except Unknown:
            delivery = Delivery(
                False, f"no notifier sends to '{channel.kind}' channels yet", retry=False
            )
        else:
            if notifier.threads:
                thread = store.thread_ref(row["deploy_id"], row["channel"])
                if thread is not None:
                    message.facts["thread_ref"] = thread
            ctx = SendContext(
                resolve=resolver.resolve,
                mask=resolver.mask,
                timeout=SEND_TIMEOUT_S,
                recipients=role_recipients(plan, channel),
            )
            try:
                delivery = await asyncio.wait_for(
                    notifier.send(channel, message, ctx), SEND_TIMEOUT_S + 5
                )
            except TimeoutError:
                delivery = Delivery(False, f"timed out after {SEND_TIMEOUT_S + 5:g} s", True)
            except Exception as exc:  # a notifier's bug must not stop the others
                delivery = Delivery(False, mask(f"{type(exc).__name__}: {exc}"), retry=True)
    detail = mask(delivery.detail)
    if len(detail) > 300:
        detail = detail[:297] + "..."
    attempts = int(row["attempts"]) + 1
    data = {"channel": row["channel"], "key": row["key"], "attempt": attempts, "detail": detail}
    if delivery.ok:
        state, next_at, etype = "sent", None, "notify.sent"
    elif delivery.retry and attempts < MAX_ATTEMPTS:
        wait = BACKOFF[attempts - 1]
        state, next_at, etype = "pending", now() + timedelta(seconds=wait), "notify.retry"
        detail = f"{detail}; next attempt in {wait} s"
    else:
        state, next_at, etype = "failed", None, "notify.failed"
    store.settle(
        int(row["id"]),
        owner,
        state=state,
        detail=detail,
        ref=delivery.ref,
        next_at=next_at,
        event=(etype, f"{row['channel']}: {message.title}: {detail}", data),
    )
    return Sent(row["channel"], state, detail, message.title)


def role_recipients(plan: Plan, channel: NotificationChannel) -> list[str]:
    """The email addresses of the channel's ``to_roles`` (their ``contact``; ``tminus check``
    rejects a role without one)."""
    out: list[str] = []
    for name in channel.to_roles:
        role = plan.roles.get(name)
        if role is not None and role.contact and "@" in role.contact:
            out.append(role.contact.strip())
    return out


def _limit_of(
    context: Callable[[str], tuple[Plan, Resolver] | None], deploy_id: str, channel: str
) -> RateLimit | None:
    got = context(deploy_id)
    if got is None:
        return None
    declared = got[0].notifications.channels.get(channel)
    return declared.effective_rate_limit() if declared is not None else None


async def deliver_due(
    store: Store,
    owner: str,
    context: Callable[[str], tuple[Plan, Resolver] | None],
    *,
    deploy_id: str | None = None,
    limit: int = 20,
) -> list[Sent]:
    """Send the due messages (of one deploy, or all), side by side; their outcomes. A
    channel's rate limit holds what is beyond it (sent later, in order, never dropped)."""
    rows = store.claim_outbox(owner, LEASE, deploy_id=deploy_id, limit=limit)
    if not rows:
        return []
    # One channel of one deploy at a time, in order (a chat thread is started by the first
    # message and continued by the next ones); different channels side by side.
    lanes: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        lanes.setdefault((r["deploy_id"], r["channel"]), []).append(r)

    async def lane(items: list[dict[str, Any]]) -> list[Sent]:
        out: list[Sent] = []
        d, ch = items[0]["deploy_id"], items[0]["channel"]
        rate = _limit_of(context, d, ch)
        window = store.sent_since(d, ch, now() - rate.per) if rate is not None else []
        for k, r in enumerate(items):
            if rate is not None:
                at = now()
                window = [w for w in window if w > at - rate.per]
                if len(window) >= rate.count:
                    free = window[len(window) - rate.count] + rate.per
                    shown = f"{free.astimezone(UTC):%H:%M:%S} UTC"
                    for held in items[k:]:  # the rest of the lane waits too, in order
                        store.hold(
                            int(held["id"]),
                            owner,
                            next_at=free,
                            detail=f"{HELD}{rate} of channel '{ch}'; next attempt at {shown}",
                        )
                        title = str(held["message"].get("title") or "")
                        out.append(Sent(ch, "held", f"rate limit {rate}: until {shown}", title))
                    break
            if not store.take(int(r["id"]), owner, LEASE):
                continue  # its lease ran out while the lane was busy: not ours to send now
            sent = await _send_one(store, owner, r, context)
            if rate is not None and sent.state == "sent":
                window.append(now())
            out.append(sent)
        return out

    done = await asyncio.gather(*(lane(items) for items in lanes.values()))
    return [s for group in done for s in group]


def _owner(engine: Engine) -> str:
    import os
    import socket

    return f"runner:{socket.gethostname()}:{os.getpid()}"


async def pump(engine: Engine, stop: asyncio.Event, every: float = 0.5) -> None:
    """While the deploy runs: deliver its due messages (a task beside the run), until
    ``stop`` is set; a pass under way finishes first."""
    while not stop.is_set():
        await deliver_for(engine)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


async def deliver_for(engine: Engine) -> list[Sent]:
    try:
        sent = await deliver_due(
            engine.store,
            _owner(engine),
            lambda d: (engine.plan, engine.resolver) if d == engine.deploy_id else None,
            deploy_id=engine.deploy_id,
        )
    except Exception as exc:  # a store hiccup must not end the deploy
        engine.reporter.line(f"notifications not delivered now: {type(exc).__name__}: {exc}")
        return []
    for s in sent:
        engine.reporter.line(f"[notify {s.channel}: {s.state}] {s.title}: {s.detail}")
    return sent


async def flush(
    engine: Engine, pumping: asyncio.Task[None], stop: asyncio.Event, seconds: float = FLUSH_S
) -> None:
    """After the run: stop the pump (its pass under way finishes), then deliver what is due,
    all within ``seconds``; what is left stays pending for a server or the next run."""

    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def until_done() -> None:
        stop.set()
        await pumping
        while True:
            if await deliver_for(engine):
                continue
            # Messages a rate limit holds are sent when their turn comes, if it comes in time
            held = [
                r["next_at"]
                for r in engine.store.outbox(engine.deploy_id)
                if r["state"] == "pending" and str(r["detail"] or "").startswith(HELD)
            ]
            if not held:
                return
            wait = (min(held) - now()).total_seconds()
            if loop.time() + wait >= deadline:
                return
            await asyncio.sleep(max(wait, 0.05))

    try:
        await asyncio.wait_for(until_done(), seconds)
    except TimeoutError:
        pumping.cancel()
        await asyncio.gather(pumping, return_exceptions=True)
        # Handed back at once rather than after the lease: a receiver that got the message
        # but had not answered may get it again (the one way a message arrives twice).
        engine.store.release_outbox(_owner(engine))
        engine.reporter.line(
            f"notifications: still sending after {seconds:g} s; left to tminus serve or the "
            "next run of this deploy"
        )
