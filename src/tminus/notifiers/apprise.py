"""``kind: apprise``: any `Apprise <https://github.com/caronc/apprise>`_ URL (Microsoft Teams
``msteams://``, Discord ``discord://``, PagerDuty ``pagerduty://``, Opsgenie ``opsgenie://``,
Telegram ``tgram://``, a JSON endpoint ``json://``, …), so tminus does not hand-write the long
tail of services. PagerDuty and Opsgenie pages are sent this way.

The channel's ``url`` is resolved first (it usually carries a secret: ``${env:TEAMS_URL}``).
The title is the message's title, the body its text; Apprise's notify type comes from the
severity: ``info`` → info (success for a ``success``/``after_success`` message), ``warning``
→ warning, ``critical`` → failure.

Apprise's ``notify()`` is synchronous: it runs in a thread, under the send timeout (also
given to Apprise as its call deadline). Apprise answers only yes or no, so a failure is
always worth a retry, and ``detail`` names the service's scheme (never the URL) and, on a
failure, what Apprise logged about it (masked, with every part of the URL hidden). A URL
Apprise does not take (an unknown scheme, a malformed one) is the channel's set-up: no retry.
Needs ``apprise`` 2.3 or later (its per-call result and logs).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from tminus.notifiers.base import Delivery, Message, SendContext
from tminus.notifiers.webhook import scrub, url_parts

if TYPE_CHECKING:
    from tminus.plan.model import NotificationChannel

__all__ = ["NOTIFIER", "AppriseNotifier", "notify_type", "scheme_of"]

#: How many of Apprise's log lines a failure's detail quotes.
LOG_LINES = 5


def scheme_of(url: str) -> str:
    """The service's scheme (``msteams``, ``json``), or ``?`` when the URL has none."""
    head = url.split("://", 1)[0] if "://" in url else ""
    return head.lower() if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,31}", head) else "?"


def notify_type(message: Message) -> str:
    """Apprise's notify type (``info``, ``success``, ``warning``, ``failure``)."""
    if message.severity == "critical":
        return "failure"
    if message.severity == "warning":
        return "warning"
    return "success" if message.when in ("success", "after_success") else "info"


def hidden_parts(url: str) -> list[str | None]:
    """Every part of an Apprise URL that may be a credential: its host too (PagerDuty's
    ``pagerduty://<integration key>@<api key>``, a Discord ``discord://<id>/<token>``)."""
    parts = urlsplit(url)
    return [*url_parts(url), parts.netloc, parts.hostname, parts.username, parts.password]


def _notify(url: str, title: str, body: str, kind: str, timeout: float) -> tuple[str, str]:
    """In a worker thread: how it went (``sent``, ``failed``, ``timeout``, or ``refused``
    when Apprise does not take the URL) and what Apprise logged."""
    import apprise

    obj = apprise.Apprise()
    if not obj.add(url):
        return "refused", ""
    result = obj.notify(body=body, title=title, notify_type=kind, timeout=timeout)
    if result:
        return "sent", ""
    lines = [f"{e.level} {e.message}" for e in result.logs()][-LOG_LINES:]
    timed_out = result.status == apprise.AppriseResultStatus.TIMEOUT
    return ("timeout" if timed_out else "failed"), " | ".join(lines)


class AppriseNotifier:
    kind: ClassVar[str] = "apprise"
    threads: ClassVar[bool] = False

    async def send(
        self, channel: NotificationChannel, message: Message, ctx: SendContext
    ) -> Delivery:
        hidden: list[str | None] = []
        try:
            url = ctx.resolve(channel.url or "").strip()
            hidden += hidden_parts(url)
        except Exception as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", hidden, ctx.mask)
            return Delivery(False, f"cannot resolve the channel's settings: {detail}")
        scheme = scheme_of(url)
        title = " ".join(message.title.split()) or f"{message.plan} {message.environment}"
        body = message.text if message.text.strip() else title
        try:
            async with asyncio.timeout(ctx.timeout):
                how, logged = await asyncio.to_thread(
                    _notify, url, title, body, notify_type(message), ctx.timeout
                )
        except TimeoutError:
            how, logged = "timeout", ""
        except ImportError:
            return Delivery(False, "the 'apprise' package is not installed (pip install apprise)")
        except Exception as exc:  # Apprise's own trouble: worth another attempt
            what = scrub(f"{type(exc).__name__}: {exc}", hidden, ctx.mask)
            return Delivery(False, f"{scheme}: Apprise failed: {what}", retry=True)
        if how == "refused":
            return Delivery(False, f"{scheme}: not a URL Apprise takes (check the channel's url)")
        if how == "sent":
            return Delivery(True, f"{scheme}: delivered by Apprise")
        if how == "timeout":  # Apprise's deadline, or ours
            return Delivery(False, f"{scheme}: timed out after {ctx.timeout:g} s", retry=True)
        logged = scrub(logged, hidden, ctx.mask) if logged else "it logged nothing"
        return Delivery(False, f"{scheme}: Apprise could not deliver: {logged}", retry=True)


NOTIFIER = AppriseNotifier()
