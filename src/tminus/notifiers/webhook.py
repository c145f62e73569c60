"""``kind: webhook``: the message as a signed JSON POST to ``url``.

The body is a versioned schema, ``tminus.notification/1``::

    {"schema": "tminus.notification/1", "id": "<message key>", "message": {...describe()...}}

sent with ``Content-Type: application/json``, ``Tminus-Id: <key>`` and the channel's
``headers`` (values resolved, so ``Authorization: Bearer ${hook_token}`` works). With a
``secret`` the request is signed as Stripe signs its webhooks::

    Tminus-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the secret>

2xx is delivered; 408, 429, 5xx, timeouts and connection errors are worth a retry; any other
answer (a 4xx, a redirect) means the channel's set-up is wrong. The receiver's verification
recipe is in ``docs/notifications.md``.

The HTTP helpers here (:func:`post`, :func:`failure`, :func:`scrub`) are shared with the
Slack notifier.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import httpx

from tminus.notifiers.base import Delivery, Message, SendContext, describe

if TYPE_CHECKING:
    from tminus.plan.model import NotificationChannel

__all__ = [
    "INTERNAL_FACTS",
    "NOTIFIER",
    "SCHEMA",
    "WebhookNotifier",
    "body",
    "failure",
    "post",
    "public_facts",
    "scrub",
    "sign",
]

SCHEMA = "tminus.notification/1"
SIGNATURE_HEADER = "Tminus-Signature"
ID_HEADER = "Tminus-Id"
USER_AGENT = "tminus-notifier"
#: Facts the outbox adds for a notifier's own use (a chat thread's reference): never shown.
INTERNAL_FACTS = frozenset({"slack_thread_ts", "thread_ref"})
#: HTTP answers worth another attempt later.
RETRY_STATUS = frozenset({408, 425, 429})
#: How much of a receiver's answer a ``detail`` quotes.
QUOTE = 200


def public_facts(message: Message) -> dict[str, str]:
    """The message's facts without the outbox's internal ones."""
    return {k: v for k, v in message.facts.items() if k not in INTERNAL_FACTS}


def body(message: Message) -> bytes:
    """The raw request body (these exact bytes are signed)."""
    data = describe(message)
    data["facts"] = public_facts(message)
    doc = {"schema": SCHEMA, "id": message.key, "message": data}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: str, payload: bytes, timestamp: int) -> str:
    """The ``Tminus-Signature`` header value for ``payload`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def scrub(text: str, hidden: Iterable[str | None], mask: Callable[[str], str]) -> str:
    """``text`` on one line, at most a few hundred characters, with every hidden value (a
    resolved URL and its path, a token, a password) replaced by ``***``, then masked."""
    for value in sorted((v for v in hidden if v and len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, "***")
    text = " ".join(mask(text).split())  # masked whole, then cut: no half secret survives
    return text if len(text) <= 2 * QUOTE else text[: 2 * QUOTE] + "…"


def url_parts(url: str) -> list[str]:
    """The parts of a URL that may carry a credential (a Slack webhook's path is its token)."""
    parts = urlsplit(url)
    out = [url, parts.path, parts.query, parts.netloc.rpartition("@")[0]]
    out += [seg for seg in parts.path.split("/") if len(seg) >= 6]
    return [p for p in out if p]


def failure(exc: BaseException, ctx: SendContext, hidden: Iterable[str | None]) -> Delivery:
    """The :class:`Delivery` for a request that got no answer (or a bad set-up)."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return Delivery(False, f"timed out after {ctx.timeout:g} s", retry=True)
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    detail = scrub(what, hidden, ctx.mask)
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol | ValueError):
        return Delivery(False, f"bad channel set-up: {detail}", retry=False)
    # Refused or reset connections, DNS failures, a receiver that hangs up: try again later.
    return Delivery(False, detail, retry=True)


def answer(response: httpx.Response, ctx: SendContext, hidden: Iterable[str | None]) -> Delivery:
    """A plain HTTP answer: 2xx delivered; 408/429/5xx retry; anything else is final."""
    status = response.status_code
    quoted = scrub(response.text[:65536], hidden, ctx.mask)[:QUOTE] if response.content else ""
    detail = f"HTTP {status} {quoted or response.reason_phrase}".rstrip()
    if 200 <= status < 300:
        return Delivery(True, detail)
    return Delivery(False, detail, retry=status in RETRY_STATUS or status >= 500)


async def post(
    url: str, content: bytes, headers: Mapping[str, str], ctx: SendContext
) -> httpx.Response:
    """POST ``content``; the whole request (connection included) takes at most ctx.timeout."""
    async with asyncio.timeout(ctx.timeout):
        async with httpx.AsyncClient(timeout=ctx.timeout, follow_redirects=False) as client:
            return await client.post(url, content=content, headers=dict(headers))


class WebhookNotifier:
    kind: ClassVar[str] = "webhook"
    threads: ClassVar[bool] = False

    async def send(
        self, channel: NotificationChannel, message: Message, ctx: SendContext
    ) -> Delivery:
        hidden: list[str | None] = []
        try:
            url = ctx.resolve(channel.url or "")
            hidden += url_parts(url)
            extra = {k: ctx.resolve(v) for k, v in channel.headers.items()}
            hidden += list(extra.values())
            secret = ctx.resolve(channel.secret) if channel.secret else None
            hidden.append(secret)
        except Exception as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", hidden, ctx.mask)
            return Delivery(False, f"cannot resolve the channel's settings: {detail}")
        payload = body(message)
        headers: dict[str, Any] = {"User-Agent": USER_AGENT, **extra}
        headers["Content-Type"] = "application/json"
        headers[ID_HEADER] = message.key
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, payload, int(time.time()))
        try:
            response = await post(url, payload, headers, ctx)
        except Exception as exc:
            return failure(exc, ctx, hidden)
        return answer(response, ctx, hidden)


NOTIFIER = WebhookNotifier()
