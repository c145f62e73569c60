"""Notifications of a deploy: made from the plan's rules and recorded in the outbox.

- :func:`rule_rows` turns one event of a deploy (``phase_start``, ``failure``, a T-24h
  notice…) into outbox rows: one per rule for that event and per channel of the rule, keyed
  ``WHEN/RULE/OCCURRENCE/CHANNEL`` (the idempotency key: recording it again inserts nothing).
- :func:`notify_rules` and :func:`step_notifier` are the engine's side: they record a
  deploy's messages with one ``notify`` event each; the console says *queued*, never *sent*.

Sending is :mod:`tminus.engine.delivery`; the ``required: true`` channels' gate is
:mod:`tminus.engine.required`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.engine.messages import engine_context, text_for, variables
from tminus.notifiers.base import Message, describe
from tminus.plan.model import Plan

if TYPE_CHECKING:
    from tminus.engine.engine import Engine
    from tminus.plan.interpolate import Resolver

__all__ = ["deploy_link", "notify_rules", "rule_rows", "step_notifier"]


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
