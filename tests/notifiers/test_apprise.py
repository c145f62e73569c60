"""``kind: apprise`` with the real ``apprise`` library, sending a ``json://`` URL to a real
local HTTP receiver."""

from __future__ import annotations

import asyncio

from tminus.notifiers.apprise import NOTIFIER, scheme_of
from tminus.notifiers.base import Delivery, Message
from tminus.plan.model import NotificationChannel

from .conftest import SECRET, Recorder, context, free_port, message


def channel(url: str) -> NotificationChannel:
    return NotificationChannel.model_validate({"kind": "apprise", "url": url})


def send(ch: NotificationChannel, msg: Message, timeout: float = 5.0) -> Delivery:
    return asyncio.run(NOTIFIER.send(ch, msg, context(timeout)))


def json_url(http: Recorder, path: str) -> str:
    return http.url.replace("http://", "json://", 1) + path


def test_json_url_arrives_with_title_body_and_type(http: Recorder) -> None:
    """The JSON Apprise posts arrives with the title, the text and the notify type from the
    severity; the URL's ``${…}`` is resolved first, and the detail names the scheme only.
    Mutation tried: sending the URL unresolved, and swapping title and body: this test
    fails on both."""
    ch = channel(json_url(http, "/hooks/${hook_key}"))
    got = send(ch, message(severity="critical", title="Rollback", text="Step migrate failed."))
    assert got.ok and not got.retry, got
    assert got.detail == "json: delivered by Apprise"
    (req,) = http.requests
    assert req.path == f"/hooks/{SECRET}"
    doc = req.json()
    assert doc["title"] == "Rollback"
    assert doc["message"] == "Step migrate failed."
    assert doc["type"] == "failure"
    types = []
    for severity, when in [("info", "phase_end"), ("warning", "during"), ("info", "success")]:
        assert send(ch, message(severity=severity, when=when)).ok
        types.append(http.requests[-1].json()["type"])
    assert types == ["info", "warning", "success"]


def test_receiver_down_fails_with_retry_and_apprise_logs(http: Recorder) -> None:
    """Nobody listening: failed, retry True, the detail names the scheme and quotes what
    Apprise logged, and no part of the URL (its secret path, its host) shows.
    Mutation tried: reporting Apprise's False as retry=False, leaving the logs out of the
    detail, and not hiding the URL's host: this test fails on each."""
    port = free_port()
    got = send(channel(f"json://127.0.0.1:{port}/hooks/${{hook_key}}"), message())
    assert not got.ok and got.retry is True, got
    assert got.detail.startswith("json: Apprise could not deliver: ")
    assert "Connection error" in got.detail
    assert SECRET not in got.detail and "/hooks" not in got.detail
    assert str(port) not in got.detail and "127.0.0.1" not in got.detail  # Apprise named it


def test_receiver_answering_500_fails_with_retry(http: Recorder) -> None:
    """A receiver that answers 500: failed, retry True, with Apprise's own words.
    Mutation tried: treating Apprise's False as delivered: this test fails."""
    http.respond = lambda r: (500, "boom")
    got = send(channel(json_url(http, "/x")), message())
    assert not got.ok and got.retry, got
    assert "500" in got.detail
    assert len(http.requests) == 1


def test_unknown_scheme_is_a_set_up_error() -> None:
    """A URL Apprise does not take: failed, no retry, the URL not quoted.
    Mutation tried: treating a refused URL as retryable: this test fails."""
    got = send(channel(f"nosuchservice://{SECRET}@host/x"), message())
    assert not got.ok and got.retry is False, got
    assert got.detail == "nosuchservice: not a URL Apprise takes (check the channel's url)"


def test_slow_receiver_times_out(http: Recorder) -> None:
    """A receiver that answers after 5 s with a 0.5 s timeout: failed, retry.
    Mutation tried: removing the asyncio timeout and Apprise's deadline: this test fails."""
    http.delay = 5.0
    got = send(channel(json_url(http, "/slow")), message(), timeout=0.5)
    assert not got.ok and got.retry, got
    assert got.detail == "json: timed out after 0.5 s"


def test_scheme_of_never_returns_the_url() -> None:
    """Only a scheme-shaped head is shown.
    Mutation tried: returning the URL's head unchecked: this test fails."""
    assert scheme_of("msteams://a/b/c") == "msteams"
    assert scheme_of("pagerduty://key@apikey") == "pagerduty"
    assert scheme_of(f"{SECRET} junk://x") == "?"
    assert scheme_of("no scheme") == "?"
