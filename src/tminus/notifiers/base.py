"""The notifier plug-in interface: how a message reaches a channel of the plan
(``notifications.channels``).

A :class:`Notifier` sends one :class:`Message` to one channel and says what the receiver
answered (:class:`Delivery`): delivered or not, whether trying again could help, and the
receiver's own reference (a Slack message's ``ts``, an SMTP queue id). It never raises for a
receiver's failure. Which messages are sent, when, and how often they are retried is the
outbox's business (:mod:`tminus.serve` and the engine record them first), not the notifier's.

Notifiers are found by channel ``kind`` through :data:`NOTIFIERS` (one module per kind:
``log``, ``slack``, ``email``, ``webhook``, ``statuspage``, ``apprise``); the engine and the
server know none by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from tminus.registry import Registry

if TYPE_CHECKING:
    from tminus.plan.model import NotificationChannel

__all__ = [
    "BUILTIN_NOTIFIERS",
    "NOTIFIERS",
    "Delivery",
    "Message",
    "Notifier",
    "SendContext",
    "get_notifier",
]


@dataclass(frozen=True)
class Message:
    """One message of a deploy, already masked (no secret in any field)."""

    #: The idempotency key: (deploy, rule, occurrence), e.g. ``media-1/rule/0/notice:0:…``.
    key: str
    deploy_id: str
    plan: str
    environment: str
    #: The event that made it: a rule's ``when`` (``before_window``, ``failure``, …) or
    #: ``step`` for a ``notify`` step, ``test`` for ``tminus notify test``.
    when: str
    #: A short title (a subject line, a Slack header) and the text.
    title: str
    text: str
    severity: str = "info"  # info | warning | critical
    audience: str | None = None
    #: The deploy's state and phase when the message was made.
    state: str | None = None
    phase: str | None = None
    #: A link to the deploy (the dashboard), when one is served.
    link: str | None = None
    #: More facts, shown as fields: "ETA", "downtime so far", "failed step".
    facts: dict[str, str] = field(default_factory=dict)
    #: ISO-8601 time the message was made.
    at: str = ""


@dataclass
class Delivery:
    """What the receiver answered."""

    ok: bool
    #: The receiver's answer, masked: "HTTP 200 ok", "250 2.0.0 Ok: queued as 4F2A", or why
    #: it failed ("535 5.7.8 authentication failed", "timed out after 10 s").
    detail: str
    #: Worth trying again later (a timeout, a 5xx, a refused connection); False when it is
    #: the channel's set-up that is wrong (a 4xx, an auth failure).
    retry: bool = False
    #: The receiver's reference for the message (Slack ``ts``, an SMTP queue id), if any.
    ref: str | None = None


@dataclass
class SendContext:
    """What a notifier needs besides the channel and the message."""

    #: Resolves ``${…}`` in the channel's strings (``url: ${env:SLACK_WEBHOOK}``).
    resolve: Callable[[str], str]
    #: Masks secrets in whatever the notifier reports (its ``detail``).
    mask: Callable[[str], str]
    #: Seconds one attempt may take, connection included.
    timeout: float = 10.0
    #: Email: recipients added to the channel's ``to`` (the plan's roles' contacts).
    recipients: list[str] = field(default_factory=list)


class Notifier(Protocol):
    kind: ClassVar[str]
    #: The notifier continues a deploy's earlier message (a chat thread, an incident, an
    #: email conversation): it is given ``facts["thread_ref"]``, the ``ref`` of the first
    #: message delivered to the same channel for the same deploy.
    threads: ClassVar[bool]

    async def send(
        self, channel: NotificationChannel, message: Message, ctx: SendContext
    ) -> Delivery:
        """Send ``message`` to ``channel``; never raise for the receiver's failure."""
        ...


#: channel kind → ``module`` (each module's ``NOTIFIER``).
BUILTIN_NOTIFIERS: dict[str, str] = {
    "log": "tminus.notifiers.log",
    "slack": "tminus.notifiers.slack",
    "email": "tminus.notifiers.email",
    "webhook": "tminus.notifiers.webhook",
    "statuspage": "tminus.notifiers.statuspage",
    "apprise": "tminus.notifiers.apprise",
}

NOTIFIERS: Registry[Notifier] = Registry(
    "notification channel kind", BUILTIN_NOTIFIERS, default_attr="NOTIFIER"
)


def get_notifier(kind: str) -> Notifier:
    return NOTIFIERS.get(kind)


def describe(message: Message) -> dict[str, Any]:
    """The message as JSON data (the webhook body's ``message``, the outbox's record)."""
    return {
        "key": message.key,
        "deploy": message.deploy_id,
        "plan": message.plan,
        "environment": message.environment,
        "when": message.when,
        "title": message.title,
        "text": message.text,
        "severity": message.severity,
        "audience": message.audience,
        "state": message.state,
        "phase": message.phase,
        "link": message.link,
        "facts": dict(message.facts),
        "at": message.at,
    }
