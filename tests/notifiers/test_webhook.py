"""``kind: webhook`` against a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from tminus.notifiers.base import get_notifier
from tminus.notifiers.webhook import SCHEMA
from tminus.plan.model import NotificationChannel

from .conftest import SECRET, Recorder, context, free_port, message

DOC = Path(__file__).parents[2] / "docs" / "notifications.md"


def documented_verify() -> Callable[[str, str, bytes], bool]:
    """The receiver's recipe, run from docs/notifications.md itself (so the doc cannot
    drift from what tminus sends)."""
    section = DOC.read_text().split("### Verifying the signature", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), scope)
    return cast(Callable[[str, str, bytes], bool], scope["verify"])


def channel(url: str, **kw: object) -> NotificationChannel:
    return NotificationChannel.model_validate({"kind": "webhook", "url": url, **kw})


def test_signed_body_verifies_with_the_documented_recipe(http: Recorder) -> None:
    """The documented schema arrives, signed; the documented recipe (run from the doc)
    accepts it with the secret and rejects it with a wrong secret or a changed body.
    Mutation tried: dropping the Tminus-Signature header, and signing the body without the
    "<t>." prefix: this test fails on both."""
    ch = channel(http.url + "/hook", secret="${hook_key}", headers={"X-Team": "media"})
    got = asyncio.run(get_notifier("webhook").send(ch, message(), context()))
    assert got.ok and not got.retry, got
    assert got.detail.startswith("HTTP 200")
    (req,) = http.requests
    assert req.path == "/hook"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Tminus-Id"] == "media-1/rule/0/window_start:0"
    assert req.headers["X-Team"] == "media"
    doc = req.json()
    assert doc["schema"] == SCHEMA == "tminus.notification/1"
    assert doc["id"] == "media-1/rule/0/window_start:0"
    assert doc["message"]["deploy"] == "media-1"
    assert doc["message"]["facts"] == {"ETA": "20 min", "Downtime so far": "0 s"}
    sig = req.headers["Tminus-Signature"]
    verify = documented_verify()
    assert verify(SECRET, sig, req.body)
    assert not verify("not-the-secret", sig, req.body)
    assert not verify(SECRET, sig, req.body.replace(b"media", b"evil!"))
    t = int(dict(p.split("=", 1) for p in sig.split(","))["t"])
    assert abs(time.time() - t) < 300


def test_no_secret_no_signature_and_headers_resolved(http: Recorder) -> None:
    """Without a secret there is no signature header; header values go through resolve;
    the outbox's internal thread fact is not sent.
    Mutation tried: sending the header values unresolved: this test fails."""
    ch = channel(http.url, headers={"Authorization": "Bearer ${hook_key}"})
    msg = message(facts={"ETA": "5 min", "thread_ref": "abc"})
    got = asyncio.run(get_notifier("webhook").send(ch, msg, context()))
    assert got.ok, got
    (req,) = http.requests
    assert "Tminus-Signature" not in req.headers
    assert req.headers["Authorization"] == f"Bearer {SECRET}"
    assert req.json()["message"]["facts"] == {"ETA": "5 min"}
    assert SECRET not in got.detail


def test_server_errors_retry_client_errors_do_not(http: Recorder) -> None:
    """500, 503, 429, 408 are worth a retry; 400, 404, 410 and a redirect are not.
    Mutation tried: treating every failure as retry=True: this test fails."""
    expect = {500: True, 503: True, 429: True, 408: True, 400: False, 404: False, 302: False}
    for status, retry in expect.items():
        http.respond = lambda r, s=status: (s, "nope")  # type: ignore[misc]
        got = asyncio.run(get_notifier("webhook").send(channel(http.url), message(), context()))
        assert not got.ok, status
        assert got.retry is retry, (status, got)
        assert got.detail.startswith(f"HTTP {status}"), got.detail


def test_slow_receiver_times_out_and_retries(http: Recorder) -> None:
    """A receiver that answers after 5 s, with a 0.5 s timeout: failed, retry, and the
    notifier gave up instead of waiting for the answer.
    Mutation tried: reporting a timeout as retry=False, and removing both the asyncio
    timeout and httpx's: this test fails on both."""
    http.delay = 5.0
    started = time.monotonic()
    got = asyncio.run(get_notifier("webhook").send(channel(http.url), message(), context(0.5)))
    took = time.monotonic() - started
    assert not got.ok and got.retry, got
    assert got.detail == "timed out after 0.5 s"
    assert took < 4.0  # gave up well before the receiver would have answered


def test_refused_connection_retries() -> None:
    """Nobody listening: failed, retry=True, and the URL is not in the detail.
    Mutation tried: returning retry=False for transport errors: this test fails."""
    url = f"http://127.0.0.1:{free_port()}/hooks/{SECRET}"
    got = asyncio.run(get_notifier("webhook").send(channel(url), message(), context()))
    assert not got.ok and got.retry, got
    assert SECRET not in got.detail and "/hooks/" not in got.detail


def test_receiver_echo_is_masked(http: Recorder) -> None:
    """A receiver that echoes the request (with a secret in it) in its 400 answer: the
    detail quotes it masked.
    Mutation tried: dropping ctx.mask/scrub from the detail: this test fails."""
    http.respond = lambda r: (400, "bad: " + r.json()["message"]["text"])
    msg = message(title=f"token {SECRET}", text=f"password is {SECRET}", facts={"k": SECRET})
    got = asyncio.run(get_notifier("webhook").send(channel(http.url), msg, context()))
    assert not got.ok and not got.retry
    assert SECRET.encode() in http.requests[0].body  # it did echo it ...
    assert SECRET not in got.detail  # ... and the detail does not repeat it
    assert "***" in got.detail
    assert json.loads(http.requests[0].body)["schema"] == SCHEMA
