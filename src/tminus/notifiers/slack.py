"""``kind: slack``: a Block Kit message through an incoming webhook or the Web API.

Two set-ups:

- ``url`` only: an incoming webhook. One POST per message; Slack answers ``200 ok``.
- ``token`` and ``channel``: a bot token and ``chat.postMessage``. All messages of one deploy
  go to one thread. The first message is posted as the thread's parent and its ``ts`` is
  returned as :attr:`Delivery.ref`; a later message must carry that ``ts`` in
  ``message.facts["slack_thread_ts"]`` (or ``"thread_ref"``, the outbox's generic name): it
  is posted as a reply (``thread_ts``), and the parent is updated (``chat.update``) to show
  the deploy's current state and latest message. The ``ref`` of a reply is the thread's
  ``ts`` again, so "the ref of any sent message" is always the thread to post into. A reply
  of ``critical`` severity is also broadcast to the channel. With a token, ``url`` (if given)
  is the Web API's base URL instead of ``https://slack.com/api`` (a proxy, or a test).

The Web API answers HTTP 200 with ``{"ok": false, "error": "..."}`` when it refuses: that is
a failure, worth a retry only when the error is ``ratelimited`` or Slack's own trouble
(like an HTTP 429 or 5xx, a timeout or a refused connection).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

from tminus.notifiers.base import Delivery, Message, SendContext
from tminus.notifiers.webhook import answer, failure, post, public_facts, scrub, url_parts

if TYPE_CHECKING:
    from tminus.plan.model import NotificationChannel

__all__ = ["API_BASE", "NOTIFIER", "SlackNotifier", "blocks", "card_blocks"]

API_BASE = "https://slack.com/api"
THREAD_FACTS = ("slack_thread_ts", "thread_ref")
#: Web API errors that are Slack's trouble or a rate limit, not the channel's set-up.
RETRY_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)
_EMOJI = {"warning": ":warning: ", "critical": ":rotating_light: "}
#: Block Kit limits: a header's text, a section's text, a field's text, fields per section.
HEADER_MAX, SECTION_MAX, FIELD_MAX, FIELDS_PER_SECTION = 150, 3000, 2000, 10


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _esc(text: str) -> str:
    """Text for ``mrkdwn``: Slack's three control characters escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _header(text: str) -> dict[str, Any]:
    plain = " ".join(text.split()) or "tminus"
    return {"type": "header", "text": {"type": "plain_text", "text": _cut(plain, HEADER_MAX)}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_MAX)}}


def _fields(message: Message, *, deploy: bool = False) -> list[dict[str, Any]]:
    pairs: list[tuple[str, str | None]] = [
        ("Plan", message.plan),
        ("Environment", message.environment),
        ("Phase", message.phase),
        ("State", message.state),
        ("Severity", message.severity),
    ]
    if deploy:
        pairs.append(("Deploy", message.deploy_id))
    pairs += list(public_facts(message).items())
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{_esc(name)}*\n{_esc(value)}", FIELD_MAX)}
        for name, value in pairs
        if value
    ]
    return [
        {"type": "section", "fields": fields[i : i + FIELDS_PER_SECTION]}
        for i in range(0, len(fields), FIELDS_PER_SECTION)
    ]


def _footer(message: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if message.link:
        button = {
            "type": "button",
            "text": {"type": "plain_text", "text": "Open the deploy"},
            "url": message.link,
            "action_id": "tminus_open_deploy",
        }
        out.append({"type": "actions", "elements": [button]})
    about = f"deploy `{_esc(message.deploy_id)}` · {_esc(message.when)}"
    if message.at:
        about += f" · {_esc(message.at)}"
    out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": about}]})
    return out


def blocks(message: Message) -> list[dict[str, Any]]:
    """The Block Kit layout of one message: a header (the title), a section (the text),
    the fields (plan, environment, phase, state, severity, facts), a button to the deploy's
    link when there is one, and a context line."""
    out = [_header(_EMOJI.get(message.severity, "") + message.title)]
    if message.text.strip():
        out.append(_section(_esc(message.text)))
    return out + _fields(message) + _footer(message)


def card_blocks(message: Message) -> list[dict[str, Any]]:
    """The thread parent's layout: the deploy (plan → environment, its state) and the
    latest message."""
    state = f": {message.state}" if message.state else ""
    out = [_header(f"{message.plan} → {message.environment}{state}")]
    latest = f"*{_esc(' '.join(message.title.split()))}*"
    if message.text.strip():
        latest += "\n" + _esc(message.text)
    out.append(_section(latest))
    return out + _fields(message, deploy=True) + _footer(message)


def fallback(message: Message) -> str:
    """The notification text (and what clients without blocks show)."""
    text = f"[{message.plan} {message.environment}] {message.title}"
    if message.text.strip():
        text += f": {message.text}"
    return _cut(text, SECTION_MAX)


def thread_of(message: Message) -> str | None:
    for key in THREAD_FACTS:
        if message.facts.get(key):
            return message.facts[key]
    return None


class SlackNotifier:
    kind: ClassVar[str] = "slack"
    threads: ClassVar[bool] = True

    async def send(
        self, channel: NotificationChannel, message: Message, ctx: SendContext
    ) -> Delivery:
        hidden: list[str | None] = []
        try:
            url = ctx.resolve(channel.url) if channel.url else None
            hidden += url_parts(url) if url else []
            token = ctx.resolve(channel.token) if channel.token else None
            hidden.append(token)
            target = ctx.resolve(channel.channel) if channel.channel else None
        except Exception as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", hidden, ctx.mask)
            return Delivery(False, f"cannot resolve the channel's settings: {detail}")
        if token and target:
            api = _WebApi((url or API_BASE).rstrip("/"), token, ctx, hidden)
            return await api.send(target, message)
        if not url:
            return Delivery(False, "a slack channel needs 'url', or 'token' and 'channel'")
        payload = {"text": fallback(message), "blocks": blocks(message)}
        content = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            response = await post(url, content, {"Content-Type": "application/json"}, ctx)
        except Exception as exc:
            return failure(exc, ctx, hidden)
        return answer(response, ctx, hidden)


class _WebApi:
    def __init__(self, base: str, token: str, ctx: SendContext, hidden: list[str | None]) -> None:
        self.base, self.token, self.ctx, self.hidden = base, token, ctx, hidden

    async def call(self, method: str, payload: dict[str, Any]) -> tuple[dict[str, Any], Delivery]:
        """One Web API call: the answer's JSON and how it went (``ok`` or why not)."""
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Authorization": f"Bearer {self.token}",
        }
        content = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            response = await post(f"{self.base}/{method}", content, headers, self.ctx)
        except Exception as exc:
            return {}, failure(exc, self.ctx, self.hidden)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            got = answer(response, self.ctx, self.hidden)
            if got.ok:  # a 2xx that is not the Web API's JSON: a wrong base URL
                return {}, Delivery(False, f"{method}: not a Slack API answer ({got.detail})")
            return {}, Delivery(False, f"{method}: {got.detail}", retry=got.retry)
        status = response.status_code
        if data.get("ok") is True and status < 300:
            return data, Delivery(True, f"{method}: HTTP {status} ok")
        error = scrub(str(data.get("error") or "no error given"), self.hidden, self.ctx.mask)
        retry = status == 429 or status >= 500 or error in RETRY_ERRORS
        return data, Delivery(False, f"{method}: HTTP {status} {error}", retry=retry)

    async def send(self, target: str, message: Message) -> Delivery:
        parent = thread_of(message)
        text = fallback(message)
        if parent is None:
            payload = {"channel": target, "text": text, "blocks": card_blocks(message)}
            data, got = await self.call("chat.postMessage", payload | {"unfurl_links": False})
            if not got.ok:
                return got
            ts = str(data.get("ts") or "")
            got.detail += f", thread {ts} started"
            got.ref = ts or None
            return got
        reply: dict[str, Any] = {
            "channel": target,
            "text": text,
            "blocks": blocks(message),
            "thread_ts": parent,
            "unfurl_links": False,
        }
        if message.severity == "critical":
            reply["reply_broadcast"] = True
        data, got = await self.call("chat.postMessage", reply)
        if not got.ok:
            return got
        got.ref = parent
        got.detail += f", reply {data.get('ts', '?')} in thread {parent}"
        # The reply arrived: a failed update of the parent must not make the outbox send the
        # reply again, so it is reported in the detail only.
        where = str(data.get("channel") or target)  # chat.update needs the channel's ID
        update = {"channel": where, "ts": parent, "text": text, "blocks": card_blocks(message)}
        _, updated = await self.call("chat.update", update)
        got.detail += (
            "; parent updated" if updated.ok else f"; parent NOT updated ({updated.detail})"
        )
        return got


NOTIFIER = SlackNotifier()
