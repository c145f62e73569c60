"""``kind: slack`` against a real local HTTP server playing Slack (webhook and Web API)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from tminus.notifiers.base import Delivery, Message, get_notifier
from tminus.plan.model import NotificationChannel

from .conftest import SECRET, Recorder, Reply, Request, context, message

TOKEN = "xoxb-" + SECRET


def send(ch: NotificationChannel, msg: Message, timeout: float = 5.0) -> Delivery:
    return asyncio.run(get_notifier("slack").send(ch, msg, context(timeout)))


def web_api(ch: NotificationChannel | None = None) -> Any:
    """Slack's Web API as a receiver: chat.postMessage gives a new ts, chat.update echoes."""
    counter = itertools.count(1)

    def respond(req: Request) -> Reply:
        body = req.json()
        if req.path == "/api/chat.postMessage":
            return 200, {"ok": True, "channel": "C0123", "ts": f"1700000000.{next(counter):06d}"}
        if req.path == "/api/chat.update":
            return 200, {"ok": True, "channel": body["channel"], "ts": body["ts"]}
        return 404, "unknown method"

    return respond


def bot(http: Recorder) -> NotificationChannel:
    return NotificationChannel.model_validate(
        {"kind": "slack", "token": TOKEN, "channel": "C0123", "url": http.url + "/api"}
    )


def test_incoming_webhook_block_kit(http: Recorder) -> None:
    """An incoming webhook gets the fallback text and the Block Kit layout: header, text,
    fields (plan, environment, phase, state, severity, facts), the link button, context.
    Mutation tried: leaving the facts out of the fields, and dropping the button: this test
    fails on both."""
    ch = NotificationChannel.model_validate(
        {"kind": "slack", "url": http.url + f"/services/T000/B000/{SECRET}"}
    )
    got = send(ch, message(text="Read-only <now> & then"))
    assert got.ok and got.detail == "HTTP 200 ok", got
    assert got.ref is None
    (req,) = http.requests
    assert req.headers["Content-Type"] == "application/json"
    body = req.json()
    assert body["text"].startswith("[media prod] Maintenance window opens: Read-only")
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds == ["header", "section", "section", "actions", "context"]
    header, text, fields, actions, about = body["blocks"]
    assert header["text"] == {"type": "plain_text", "text": ":warning: Maintenance window opens"}
    assert text["text"] == {"type": "mrkdwn", "text": "Read-only &lt;now&gt; &amp; then"}
    shown = [f["text"] for f in fields["fields"]]
    assert shown == [
        "*Plan*\nmedia",
        "*Environment*\nprod",
        "*Phase*\nmigrate",
        "*State*\nrunning",
        "*Severity*\nwarning",
        "*ETA*\n20 min",
        "*Downtime so far*\n0 s",
    ]
    assert all(f["type"] == "mrkdwn" for f in fields["fields"])
    (button,) = actions["elements"]
    assert button["type"] == "button"
    assert button["url"] == "http://tminus.example/deploys/media-1"
    assert "media-1" in about["elements"][0]["text"]


def test_many_facts_split_into_sections_of_ten(http: Recorder) -> None:
    """Slack allows 10 fields per section: 5 standard + 12 facts make two sections, and no
    link means no button.
    Mutation tried: one section with all the fields: this test fails."""
    ch = NotificationChannel.model_validate({"kind": "slack", "url": http.url})
    facts = {f"fact {i}": str(i) for i in range(12)}
    assert send(ch, message(facts=facts, link=None)).ok
    blocks = http.requests[0].json()["blocks"]
    sections = [b for b in blocks if "fields" in b]
    assert [len(s["fields"]) for s in sections] == [10, 7]
    assert "actions" not in [b["type"] for b in blocks]


def test_bot_token_one_thread_per_deploy(http: Recorder) -> None:
    """The first message starts a thread (its ts is the ref); the second, given that ts in
    facts, is a reply with thread_ts, and the parent is updated with the current state.
    Mutation tried: not passing thread_ts, and skipping chat.update: this test fails."""
    http.respond = web_api()
    ch = bot(http)
    first = send(ch, message(state="scheduled", facts={}))
    assert first.ok, first
    assert first.ref == "1700000000.000001"
    (post,) = http.requests
    assert post.path == "/api/chat.postMessage"
    assert post.headers["Authorization"] == f"Bearer {TOKEN}"
    body = post.json()
    assert body["channel"] == "C0123" and "thread_ts" not in body
    assert body["blocks"][0]["text"]["text"] == "media → prod: scheduled"

    later = message(
        key="media-1/rule/1/phase_end:0",
        title="Phase migrate done",
        state="verifying",
        severity="info",
        facts={"slack_thread_ts": first.ref, "ETA": "5 min"},
    )
    second = send(ch, later)
    assert second.ok, second
    assert second.ref == first.ref  # the ref is always the thread
    assert "parent updated" in second.detail
    reply, update = http.requests[1:]
    assert reply.path == "/api/chat.postMessage"
    assert reply.json()["thread_ts"] == "1700000000.000001"
    assert reply.json()["blocks"][0]["text"]["text"] == "Phase migrate done"
    assert "reply_broadcast" not in reply.json()
    fields = [f["text"] for b in reply.json()["blocks"] for f in b.get("fields", [])]
    assert "*ETA*\n5 min" in fields
    assert not any("slack_thread_ts" in f or first.ref in f for f in fields)
    assert update.path == "/api/chat.update"
    up = update.json()
    assert up["ts"] == "1700000000.000001" and up["channel"] == "C0123"
    assert up["blocks"][0]["text"]["text"] == "media → prod: verifying"
    assert "Phase migrate done" in up["blocks"][1]["text"]["text"]


def test_outbox_thread_ref_and_critical_broadcast(http: Recorder) -> None:
    """The outbox's generic ``thread_ref`` fact threads too; a critical reply is also
    broadcast to the channel.
    Mutation tried: reading only ``slack_thread_ts``: this test fails."""
    http.respond = web_api()
    got = send(bot(http), message(severity="critical", facts={"thread_ref": "1699.000042"}))
    assert got.ok and got.ref == "1699.000042", got
    reply = http.requests[0].json()
    assert reply["thread_ts"] == "1699.000042"
    assert reply["reply_broadcast"] is True


def test_ok_false_is_a_failure(http: Recorder) -> None:
    """HTTP 200 with ok:false is not delivered: channel_not_found is final, ratelimited
    (as 200 or as 429) and internal_error are worth a retry.
    Mutation tried: judging by the HTTP status only: this test fails."""
    ch = bot(http)
    cases: list[tuple[int, str, bool]] = [
        (200, "channel_not_found", False),
        (200, "invalid_auth", False),
        (200, "ratelimited", True),
        (429, "ratelimited", True),
        (200, "internal_error", True),
    ]
    for status, error, retry in cases:
        http.respond = lambda r, s=status, e=error: (s, {"ok": False, "error": e})  # type: ignore[misc]
        got = send(ch, message())
        assert not got.ok, error
        assert got.retry is retry, (error, got)
        assert got.detail == f"chat.postMessage: HTTP {status} {error}"
        assert got.ref is None


def test_failed_parent_update_still_delivered(http: Recorder) -> None:
    """The reply arrived but chat.update failed: delivered (a retry would post the reply
    twice), with the failure in the detail.
    Mutation tried: returning the update's failure: this test fails."""

    def respond(req: Request) -> Reply:
        if req.path.endswith("chat.update"):
            return 200, {"ok": False, "error": "cant_update_message"}
        return 200, {"ok": True, "channel": "C0123", "ts": "1700000000.000009"}

    http.respond = respond
    got = send(bot(http), message(facts={"slack_thread_ts": "1700000000.000001"}))
    assert got.ok and got.ref == "1700000000.000001", got
    assert "parent NOT updated (chat.update: HTTP 200 cant_update_message)" in got.detail


def test_http_errors_and_timeouts(http: Recorder) -> None:
    """Webhook answers: 500 retry, 404 (channel gone) final, not-JSON from the Web API final,
    a slow Slack times out with retry.
    Mutation tried: treating a 2xx HTML page from a wrong base URL as delivered: fails."""
    hook = NotificationChannel.model_validate({"kind": "slack", "url": http.url + "/x"})
    http.respond = lambda r: (500, "internal error")
    assert send(hook, message()).retry is True
    http.respond = lambda r: (404, "no_service")
    got = send(hook, message())
    assert not got.ok and got.retry is False and got.detail == "HTTP 404 no_service"
    http.respond = lambda r: (200, "<html>a proxy</html>")
    got = send(bot(http), message())
    assert not got.ok and not got.retry
    assert got.detail.startswith("chat.postMessage: not a Slack API answer")
    http.respond = lambda r: (200, {"ok": True, "ts": "1"})
    http.delay = 5.0
    got = send(bot(http), message(), timeout=0.5)
    assert not got.ok and got.retry and got.detail == "timed out after 0.5 s"
