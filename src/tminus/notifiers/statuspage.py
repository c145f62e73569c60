"""``kind: statuspage``: an Atlassian Statuspage page, through its REST API.

The channel's ``url`` is the page's API base, ``https://api.statuspage.io/v1/pages/<page_id>``,
and its ``token`` an API key, sent as ``Authorization: OAuth <token>``. All messages of one
deploy go to **one incident** of the page: the first one creates it and its id is returned as
:attr:`Delivery.ref`; the outbox gives that id back to every later message of the deploy as
``message.facts["thread_ref"]`` (see ``docs/notifications.md``), and each of them updates the
incident (``PATCH /incidents/<id>``). What a message does depends on ``message.when``
(with an incident / without one):

- ``before_window``: a new body / a **scheduled maintenance** (``scheduled_for`` =
  ``facts["window_start"]``, ``scheduled_until`` = ``facts["window_end"]``);
- ``window_start``: status ``in_progress`` / a maintenance in progress;
- ``success``, ``after_success``: status ``completed`` / a maintenance completed;
- ``rollback``, ``failure``, ``watch_critical``: status ``identified`` / an incident
  ``investigating``;
- anything else (``during``, ``phase_start``, …): a new body, the status kept / an incident
  ``investigating``;
- ``test`` (``tminus notify test``): reads the page (``GET``) and posts nothing.

"Without" also covers an incident that is gone (the PATCH answers 404) or that refuses the
new status (422: a scheduled maintenance takes ``scheduled``/``in_progress``/``verifying``/
``completed``, an incident ``investigating``/``identified``/``monitoring``/``resolved``): a new
one is created, so nothing is lost, and ``detail`` says so. A new maintenance needs
``facts["window_start"]``; without it an incident is created (``resolved`` for a success).

2xx is delivered; 408, 429, 5xx, timeouts and refused connections are worth a retry; 401, 403,
404 and 422 are the channel's set-up (no retry)."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from tminus.notifiers.base import Delivery, Message, SendContext
from tminus.notifiers.webhook import USER_AGENT, answer, failure, scrub

if TYPE_CHECKING:
    from tminus.plan.model import NotificationChannel

__all__ = ["API_BASE", "NOTIFIER", "StatuspageNotifier", "create_fields", "update_fields"]

API_BASE = "https://api.statuspage.io/v1/pages/{page_id}"
#: Events that move the incident to a status (with an incident / the one a new one gets).
MAINTENANCE_STATUS = {
    "window_start": "in_progress",
    "success": "completed",
    "after_success": "completed",
}
TROUBLE = frozenset({"rollback", "failure", "watch_critical"})
#: Statuspage's limits: an incident's name.
NAME_MAX = 255


def update_fields(message: Message) -> dict[str, Any]:
    """The ``incident`` fields a PATCH of the deploy's incident sends for ``message``."""
    if message.when in MAINTENANCE_STATUS:
        return {"status": MAINTENANCE_STATUS[message.when], "body": message.text}
    if message.when in TROUBLE:
        return {"status": "identified", "body": message.text}
    return {"body": message.text}  # an update: the incident keeps its status


def create_fields(message: Message) -> dict[str, Any]:
    """The ``incident`` fields of a new incident (or scheduled maintenance) for ``message``."""
    when = message.when
    name = " ".join(message.title.split())[:NAME_MAX] or f"{message.plan} {message.environment}"
    fields: dict[str, Any] = {"name": name, "body": message.text}
    start, end = message.facts.get("window_start"), message.facts.get("window_end")
    status = "scheduled" if when == "before_window" else MAINTENANCE_STATUS.get(when)
    if status is not None and start:
        fields |= {
            "status": status,
            "scheduled_for": start,
            "scheduled_remind_prior": False,
            "scheduled_auto_in_progress": False,
            "scheduled_auto_completed": False,
        }
        if end:
            fields["scheduled_until"] = end
        return fields
    if when in ("success", "after_success"):
        return fields | {"status": "resolved"}
    return fields | {"status": "investigating"}


def _what(fields: dict[str, Any]) -> str:
    if "scheduled_for" in fields:
        return f"scheduled maintenance created ({fields['status']})"
    return f"incident created ({fields['status']})"


class _Api:
    def __init__(self, base: str, token: str, ctx: SendContext, hidden: list[str | None]) -> None:
        self.base, self.token, self.ctx, self.hidden = base, token, ctx, hidden

    async def call(
        self, method: str, path: str, fields: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any], Delivery]:
        """One request: the HTTP status (0: no answer), the answer's JSON object (or
        ``{}``) and how it went."""
        headers = {
            "Authorization": f"OAuth {self.token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        content = None
        if fields is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps({"incident": fields}, ensure_ascii=False).encode("utf-8")
        try:
            async with httpx.AsyncClient(timeout=self.ctx.timeout, follow_redirects=False) as c:
                response = await c.request(
                    method, self.base + path, content=content, headers=headers
                )
        except Exception as exc:
            return 0, {}, failure(exc, self.ctx, self.hidden)
        got = answer(response, self.ctx, self.hidden)
        if got.ok:  # not the whole incident the API echoes
            got.detail = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        got.detail = f"{method} {path or '/'}: {got.detail}"
        try:
            data = response.json() if got.ok else None
        except ValueError:
            data = None
        return response.status_code, (data if isinstance(data, dict) else {}), got

    async def create(self, fields: dict[str, Any], why: str = "") -> Delivery:
        _, data, got = await self.call("POST", "/incidents", fields)
        if not got.ok:
            return got
        ref = str(data.get("id") or "") or None
        # Created: sending it again would create a second incident, so this is delivered
        # even when the answer holds no id (later messages then create their own).
        got.detail = f"{got.detail}; {_what(fields)}" + (
            f" as incident {ref}" if ref else ", but the answer holds no incident id"
        )
        if why:
            got.detail += f" ({why})"
        got.ref = ref
        return got

    async def send(self, message: Message) -> Delivery:
        if message.when == "test":
            _, _, got = await self.call("GET", "", None)
            if got.ok:
                got.detail += "; page and token accepted, nothing posted (a test)"
            return got
        incident = message.facts.get("thread_ref") or None
        if incident is None:
            fields = create_fields(message)
            why = ""
            if message.when != "before_window" and message.when not in TROUBLE:
                why = f"no incident of this deploy yet for '{message.when}'"
            return await self.create(fields, why)
        fields = update_fields(message)
        status, _, got = await self.call("PATCH", f"/incidents/{quote(incident, safe='')}", fields)
        if got.ok:
            got.ref = incident
            moved = f"status {fields['status']}" if "status" in fields else "status kept"
            got.detail += f"; incident {incident} updated ({moved})"
            return got
        if status == 404 or (status == 422 and "status" in fields):
            gone = "gone" if status == 404 else "refused the update"
            why = f"incident {incident} {gone}: HTTP {status}"
            return await self.create(create_fields(message), why)
        return got


class StatuspageNotifier:
    kind: ClassVar[str] = "statuspage"
    threads: ClassVar[bool] = True

    async def send(
        self, channel: NotificationChannel, message: Message, ctx: SendContext
    ) -> Delivery:
        hidden: list[str | None] = []
        try:
            base = ctx.resolve(channel.url or "").rstrip("/")
            token = ctx.resolve(channel.token) if channel.token else None
            hidden.append(token)
        except Exception as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", hidden, ctx.mask)
            return Delivery(False, f"cannot resolve the channel's settings: {detail}")
        # The page id is no secret, but a URL may carry a credential (user:password@, ?key=).
        parts = urlsplit(base)
        hidden += [parts.netloc.rpartition("@")[0], parts.query]
        if not base:
            return Delivery(False, "a statuspage channel needs 'url' (the page's API base)")
        if not token:
            return Delivery(False, "a statuspage channel needs 'token' (an API key)")
        try:  # the whole exchange (a PATCH, then maybe a POST) within the timeout
            async with asyncio.timeout(ctx.timeout):
                got = await _Api(base, token, ctx, hidden).send(message)
        except TimeoutError as exc:
            got = failure(exc, ctx, hidden)
        got.detail = scrub(got.detail, hidden, ctx.mask)
        return got


NOTIFIER = StatuspageNotifier()
