"""Notifications: what was sent for a deploy (and sending one again), and a test message to
a plan's channels before the window."""

from __future__ import annotations

import sys
from typing import Any

import click

from tminus.cli._util import EXIT_FAILED, echo_json, handle_errors, state_option

__all__ = ["COMMANDS"]


def _ts(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S %Z}" if value is not None else "-"


@click.command()
@click.argument("deploy")
@click.option("--resend", type=int, default=None, metavar="ID", help="Send message ID again.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@state_option
@handle_errors
def notifications(deploy: str, resend: int | None, output: str, state_url: str | None) -> None:
    """The messages of DEPLOY: each channel's state (pending, sent, failed) and the receiver's
    answer; --resend ID queues one again (the deploy's runner or tminus serve sends it)."""
    from tminus.errors import NotFound
    from tminus.store import Store

    store = Store(state_url)
    store.deploy(deploy)
    if resend is not None:
        row = store.outbox_row(resend)
        if row is None or row["deploy_id"] != deploy:
            raise NotFound(
                f"no message {resend} of deploy {deploy}", hint=f"tminus notifications {deploy}"
            )
        store.resend(resend)
        store.event(deploy, "notify.resend", f"message {resend} to {row['channel']} queued again")
        click.echo(f"message {resend} to {row['channel']} queued again")
        return
    if output == "json":
        echo_json(store.outbox_listing(deploy))
        return
    rows = store.outbox(deploy)
    if not rows:
        click.echo(f"deploy {deploy}: no notifications")
        return
    for r in rows:
        m = r["message"]
        click.echo(
            f"{r['id']:>4} {r['state']:<8} {r['channel']:<14} {m.get('when', ''):<14} "
            f"{_ts(r['sent_at'] or r['created_at'])}  {m.get('title', '')}"
        )
        if r["detail"]:
            click.echo(f"     {r['detail']}")


@click.group()
def notify() -> None:
    """Notification channels of a plan."""


@notify.command("test")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.argument("channels", nargs=-1)
@click.option("--var", "variables", multiple=True, help="NAME=VALUE (repeatable).")
@handle_errors
def notify_test(plan: str, channels: tuple[str, ...], variables: tuple[str, ...]) -> None:
    """Send a test message to each channel of PLAN (or those named), now, and show what each
    receiver answered: check the set-up before the window. Exit 1 if one failed."""
    import asyncio
    import uuid
    from pathlib import Path

    from tminus.cli.deploy import _parse_vars
    from tminus.clock import now
    from tminus.engine.delivery import role_recipients
    from tminus.engine.launch import _load
    from tminus.engine.prepare import default_operator, make_resolver
    from tminus.errors import PlanError
    from tminus.notifiers.base import Delivery, Message, SendContext, get_notifier
    from tminus.plan.problems import did_you_mean
    from tminus.registry import Unknown

    loaded, _text = _load(plan)
    declared = loaded.notifications.channels
    names = list(channels) or list(declared)
    for name in names:
        if name not in declared:
            raise PlanError(
                f"no channel '{name}' in plan '{loaded.name}'",
                hint=did_you_mean(name, declared) or "channels: " + ", ".join(declared),
            )
    who = default_operator()
    resolver = make_resolver(loaded, plan, "test", who, _parse_vars(variables), Path(".tminus"))
    message = Message(
        key=f"test/{uuid.uuid4().hex[:12]}",
        deploy_id="test",
        plan=loaded.name,
        environment=loaded.environment,
        when="test",
        title=f"{loaded.name}: test message",
        text=f"A test of this channel by {who}, from tminus notify test.",
        at=now().isoformat(),
    )

    async def send_all() -> list[tuple[str, Any]]:
        async def one(name: str) -> tuple[str, Any]:
            try:
                notifier = get_notifier(declared[name].kind)
            except Unknown:
                kind = declared[name].kind
                return name, Delivery(False, f"no notifier sends to '{kind}' channels yet")
            # email: the channel's to_roles' contacts too
            ctx = SendContext(
                resolve=resolver.resolve,
                mask=resolver.mask,
                recipients=role_recipients(loaded, declared[name]),
            )
            return name, await notifier.send(declared[name], message, ctx)

        return list(await asyncio.gather(*(one(n) for n in names)))

    failed = 0
    for name, d in asyncio.run(send_all()):
        click.echo(f"{name:<16} {'sent' if d.ok else 'FAILED':<7} {resolver.mask(d.detail)}")
        failed += 0 if d.ok else 1
    if failed:
        sys.exit(EXIT_FAILED)


COMMANDS = [notifications, notify]
