"""Notifications of a deploy: made from the plan's rules, recorded in the outbox, delivered.

- :func:`rule_rows` turns one event of a deploy (``phase_start``, ``failure``, a T-24h
  notice…) into outbox rows: one per rule for that event and per channel of the rule, keyed
  ``WHEN/RULE/OCCURRENCE/CHANNEL`` (the idempotency key: recording it again inserts nothing).
- :func:`deliver_due` claims due rows, sends each through its channel's notifier
  (:mod:`tminus.notifiers`), and records the receiver's answer: *sent*; *pending* again after
  a backoff (:data:`BACKOFF`) when trying again could help; *failed* when it cannot (a 4xx,
  an auth failure) or after :data:`MAX_ATTEMPTS`. Each outcome is an event too
  (``notify.sent``, ``notify.retry``, ``notify.failed``).

The deploy's runner delivers its own deploy's messages while it runs (a task beside the run,
so a slow or failing receiver never holds a step), then for at most :data:`FLUSH_S` seconds
after the run's end; ``tminus serve`` delivers every deploy's. A message left pending is
delivered by whichever comes next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.engine.messages import engine_context, text_for, variables
from tminus.notifiers.base import Delivery, Message, SendContext, describe, get_notifier
from tminus.plan.model import NotificationChannel, Plan, RateLimit
from tminus.registry import Unknown

if TYPE_CHECKING:
    from tminus.engine.engine import Engine
    from tminus.engine.program import Node
    from tminus.plan.interpolate import Resolver
    from tminus.states import DeployState
    from tminus.store.store import Store

__all__ = [
    "BACKOFF",
    "FLUSH_S",
    "HELD",
    "MAX_ATTEMPTS",
    "REQUIRED_WITHIN_S",
    "Sent",
    "answer_required",
    "deliver_due",
    "deliver_for",
    "flush",
    "notify_rules",
    "pump",
    "required_gate",
    "role_recipients",
    "rule_rows",
    "step_notifier",
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


def rule_rows(
    plan: Plan,
    deploy_id: str,
    when: str,
    text: str,
    *,
    occurrence: str,
    resolver: Resolver,
    title: str | None = None,
    severity: str = "info",
    state: str | None = None,
    phase: str | None = None,
    facts: dict[str, str] | None = None,
    rules: list[int] | None = None,
    context: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The outbox rows for ``when`` (every rule of the plan for it, or those in ``rules``).

    Each rule's text is its ``message`` template, or the default for ``when``
    (:mod:`tminus.engine.messages`), rendered with the message's variables; ``text`` is the
    caller's account of the event (its ``reason``), ``context`` the values only the runner
    knows (ETA, downtime so far, the failed step, who started the deploy)."""
    out: list[dict[str, Any]] = []
    values: dict[str, Any] | None = None
    for i, rule in enumerate(plan.notifications.rules):
        if rule.when != when or (rules is not None and i not in rules):
            continue
        if values is None:
            values = variables(
                plan,
                deploy_id,
                when,
                occurrence=occurrence,
                resolver=resolver,
                text=text,
                state=state,
                phase=phase,
                facts=facts,
                context=context,
            )
        message = Message(
            key=f"{when}/{i}/{occurrence}",
            deploy_id=deploy_id,
            plan=plan.name,
            environment=plan.environment,
            when=when,
            title=resolver.mask(title or f"{plan.name}: {when.replace('_', ' ')}"),
            text=text_for(rule.message, when, values, resolver),
            severity=severity,
            audience=rule.audience,
            state=state,
            phase=phase,
            facts={k: resolver.mask(v) for k, v in (facts or {}).items()},
            at=now().isoformat(),
            link=str(values["deploy"].get("link") or "") or None,
        )
        channels = rule.channels or list(plan.notifications.channels) or ["log"]
        for ch in channels:
            declared = plan.notifications.channels.get(ch)
            out.append(
                {
                    "key": f"{message.key}/{ch}",
                    "channel": ch,
                    "kind": declared.kind if declared is not None else "log",
                    "message": describe(message),
                }
            )
    return out


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


# --- the engine's side --------------------------------------------------------------------
def deploy_link(store: Any, deploy_id: str) -> str | None:
    """The deploy's page on the dashboard of a live ``tminus serve --url`` of the store."""
    from datetime import timedelta

    from tminus.engine.emergency import SERVER_ALIVE_S

    url = store.dashboard_url(timedelta(seconds=SERVER_ALIVE_S))
    return f"{url}/deploys/{deploy_id}" if url else None


def _occurrence(engine: Engine, when: str) -> str:
    """How many times ``when`` was notified for this deploy, plus one (its occurrence)."""
    seen = engine.store.events(engine.deploy_id, types=("notify",))
    return str(1 + sum(1 for e in seen if (e["data"] or {}).get("when") == when))


def notify_rules(engine: Engine, when: str, text: str, occurrence: str | None = None) -> None:
    """Record the messages of the plan's rules for ``when`` (the runner or a server sends
    them); the console says they are queued, not sent."""
    if not any(r.when == when for r in engine.plan.notifications.rules):
        return
    phase = engine.plan.phases[engine._phase_now].name if engine._phase_now >= 0 else None
    d = engine.store.deploy(engine.deploy_id)
    context = engine_context(
        engine.plan,
        engine.store.phase_rows(engine.deploy_id),
        engine.store.step_rows(engine.deploy_id),
        str(d.get("started_by") or ""),
    )
    link = deploy_link(engine.store, engine.deploy_id)
    if link:
        context["deploy"] = {"link": link}
    rows = rule_rows(
        engine.plan,
        engine.deploy_id,
        when,
        text,
        occurrence=occurrence or _occurrence(engine, when),
        resolver=engine.resolver,
        severity="critical" if when in ("failure", "rollback", "watch_critical") else "info",
        state=d["state"],
        phase=phase,
        context=context,
    )
    _enqueue(engine, rows, when, text)


def _enqueue(engine: Engine, rows: list[dict[str, Any]], when: str, text: str) -> None:
    """Record the rows, one ``notify`` event per message (a rule's, or a step's) with the text
    that is sent."""
    messages: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        messages.setdefault(str(r["message"]["key"]), []).append(r)
    for group in messages.values():
        channels = list(dict.fromkeys(r["channel"] for r in group))
        shown = str(group[0]["message"]["text"])
        data = {
            "when": when,
            "channels": channels,
            "queued": len(group),
            "keys": [r["key"] for r in group],
        }
        if engine.store.enqueue(engine.deploy_id, group, ("notify", shown, data)):
            engine.reporter.line(f"[notify {','.join(channels)}: queued] {shown}")


def step_notifier(engine: Engine, key: str) -> Callable[[str, str, list[str]], Awaitable[None]]:
    """``StepContext.notify`` of the step ``key``: a ``notify`` step's message to its channels;
    with no channels, a WARN of a canary or blue-green analysis to the ``watch_warn`` rules."""

    async def notify(severity: str, text: str, channels: list[str]) -> None:
        if not channels:
            notify_rules(engine, "watch_warn", text, occurrence=key.replace("/", "."))
            return
        message = Message(
            key=f"step/{key}",
            deploy_id=engine.deploy_id,
            plan=engine.plan.name,
            environment=engine.plan.environment,
            when="step",
            title=engine._mask(f"{engine.plan.name}: {severity}"),
            text=engine._mask(text),
            severity=severity,
            at=now().isoformat(),
            link=deploy_link(engine.store, engine.deploy_id),
        )
        rows = []
        for ch in channels:
            declared = engine.plan.notifications.channels.get(ch)
            rows.append(
                {
                    "key": f"{message.key}/{ch}",
                    "channel": ch,
                    "kind": declared.kind if declared is not None else "log",
                    "message": describe(message),
                }
            )
        _enqueue(engine, rows, "step", text)

    return notify


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


# --- required channels ----------------------------------------------------------------------
#: How long a run waits for a message to a ``required: true`` channel before it pauses
#: (a channel's ``required_within`` says otherwise).
REQUIRED_WITHIN_S = 60.0


def _required(plan: Plan) -> dict[str, float]:
    """The required channels and how long a run waits for each (seconds)."""
    return {
        name: ch.required_within.total_seconds() if ch.required_within else REQUIRED_WITHIN_S
        for name, ch in plan.notifications.channels.items()
        if ch.required
    }


def _undelivered(engine: Engine, required: Mapping[str, float]) -> list[dict[str, Any]]:
    """The deploy's messages to required channels not delivered yet, except those the
    operator let go (``tminus resume --skip-step``)."""
    rows = [
        r
        for r in engine.store.outbox(engine.deploy_id)
        if r["channel"] in required and r["state"] != "sent"
    ]
    if not rows:
        return []
    waived = {
        str(k)
        for e in engine.store.events(engine.deploy_id, types=("notify.waived",))
        for k in (e["data"] or {}).get("keys", [])
    }
    return [r for r in rows if r["key"] not in waived]


async def required_gate(engine: Engine, node: Node) -> DeployState | None:
    """Before the run goes past a point: every message recorded for a ``required: true``
    channel must be delivered. Waits (sending them) up to the channel's bound; if one failed
    for good or is still not delivered, the deploy pauses (``notify.blocked``), its reason
    naming the channel and the receiver's answer. None: go on."""
    required = _required(engine.plan)
    if not required:
        return None
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        rows = _undelivered(engine, required)
        if not rows:
            return None
        waited = loop.time() - start
        failed = next((r for r in rows if r["state"] == "failed"), None)
        late = next((r for r in rows if waited >= required[r["channel"]]), None)
        blocked = failed or late
        if blocked is not None:
            title = str(blocked["message"].get("title") or blocked["key"])
            answer = blocked["detail"] or "no answer yet"
            if failed is not None:
                reason = (
                    f"required channel '{blocked['channel']}' could not be sent '{title}': {answer}"
                )
            else:
                reason = (
                    f"required channel '{blocked['channel']}' did not get '{title}' within "
                    f"{required[blocked['channel']]:g} s: {answer}"
                )
            reason += (
                f" (fix the channel, then `tminus resume {engine.deploy_id}` sends it again; "
                "`--skip-step` goes on without it)"
            )
            engine._event(
                "notify.blocked",
                reason,
                {"channel": blocked["channel"], "keys": [r["key"] for r in rows]},
                key=node.key,
            )
            return engine._pause(node, reason)
        await deliver_for(engine)
        await asyncio.sleep(0.2)


def answer_required(engine: Engine, action: str) -> str:
    """On resume: the messages to required channels that failed are queued again (the
    operator fixed the channel); if the deploy paused for one of them, ``--skip-step`` lets
    them go (``notify.waived``: the run no longer waits for them; they are still sent) and
    ``--retry-step`` is that plain resume. Returns the action left for the steps."""
    required = _required(engine.plan)
    if not required:
        return action
    rows = _undelivered(engine, required)
    seen = engine.store.events(engine.deploy_id, types=("notify.blocked", "deploy.running"))
    ours = bool(seen) and seen[-1]["type"] == "notify.blocked"
    if ours and action == "skip":
        keys = [r["key"] for r in rows]
        engine._event(
            "notify.waived",
            f"{engine.operator} let {len(keys)} message(s) to required channels go",
            {"keys": keys},
        )
        engine.reporter.line(f"going on without {len(keys)} message(s) to required channels")
        return ""
    for r in rows:
        if r["state"] == "failed":
            engine.store.resend(int(r["id"]))
            engine._event(
                "notify.resend", f"message {r['id']} to required channel {r['channel']} again"
            )
    return "" if ours and action == "retry" else action
