"""``kind: statuspage`` against a local stand-in for Atlassian's Statuspage API
(:mod:`.statuspage_fake`, a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tminus.notifiers.base import Delivery, Message
from tminus.notifiers.statuspage import NOTIFIER
from tminus.plan.model import NotificationChannel

from .conftest import SECRET, Recorder, context, free_port, message
from .statuspage_fake import PAGE_ID, StatuspageFake, serve

TOKEN = "sp-" + SECRET
WINDOW = {"window_start": "2026-12-08T02:00:00+00:00", "window_end": "2026-12-08T04:00:00+00:00"}


@pytest.fixture
def page() -> Iterator[StatuspageFake]:
    with serve(TOKEN) as fake:
        yield fake


def channel(url: str, token: str = "${hook_key}") -> NotificationChannel:
    """``${hook_key}`` resolves to SECRET in the tests' context: the token is "sp-" + it."""
    return NotificationChannel.model_validate(
        {"kind": "statuspage", "url": url, "token": "sp-" + token}
    )


def send(ch: NotificationChannel, msg: Message, timeout: float = 5.0) -> Delivery:
    return asyncio.run(NOTIFIER.send(ch, msg, context(timeout)))


def msg(when: str, text: str, ref: str | None = None, **facts: str) -> Message:
    all_facts = dict(facts) | ({"thread_ref": ref} if ref else {})
    return message(
        key=f"media-1/{when}", when=when, title=f"Media: {when}", text=text, facts=all_facts
    )


def test_lifecycle_of_the_scheduled_maintenance(page: StatuspageFake) -> None:
    """T-48h creates the scheduled maintenance with the window, T-24h updates its body,
    window_start moves it to in_progress, during updates it, success completes it; every
    delivery's ref is the incident, and the token goes as ``OAuth``.
    Mutation tried: sending window_start as a plain body update (no status), and returning
    no ref from updates: this test fails on both."""
    ch = channel(page.url)
    first = send(ch, msg("before_window", "Maintenance on Tuesday 02:00 UTC.", **WINDOW))
    assert first.ok and not first.retry, first
    ref = first.ref
    assert ref == "inc0001"
    assert "scheduled maintenance created (scheduled) as incident inc0001" in first.detail
    steps = [
        ("before_window", "Reminder: tomorrow 02:00 UTC."),
        ("window_start", "Maintenance has started."),
        ("during", "Migration 60% done."),
        ("success", "Maintenance complete."),
    ]
    for when, text in steps:
        got = send(ch, msg(when, text, ref, **WINDOW))
        assert got.ok and got.ref == ref, (when, got)
    methods = [(c.method, c.path) for c in page.calls]
    base = f"/v1/pages/{PAGE_ID}"
    assert methods == [("POST", base + "/incidents")] + [("PATCH", f"{base}/incidents/{ref}")] * 4
    created = page.calls[0].body
    assert created == {
        "incident": {
            "name": "Media: before_window",
            "body": "Maintenance on Tuesday 02:00 UTC.",
            "status": "scheduled",
            "scheduled_for": "2026-12-08T02:00:00+00:00",
            "scheduled_until": "2026-12-08T04:00:00+00:00",
            "scheduled_remind_prior": False,
            "scheduled_auto_in_progress": False,
            "scheduled_auto_completed": False,
        }
    }
    patches = [c.body for c in page.calls[1:]]
    assert patches == [
        {"incident": {"body": "Reminder: tomorrow 02:00 UTC."}},
        {"incident": {"status": "in_progress", "body": "Maintenance has started."}},
        {"incident": {"body": "Migration 60% done."}},
        {"incident": {"status": "completed", "body": "Maintenance complete."}},
    ]
    updates = page.incidents[ref]["updates"]
    assert [u["status"] for u in updates] == [
        "scheduled",
        "scheduled",
        "in_progress",
        "in_progress",
        "completed",
    ]
    assert all(c.headers["Authorization"] == f"OAuth {TOKEN}" for c in page.calls)
    assert all(c.headers["Content-Type"] == "application/json" for c in page.calls)


def test_rollback_updates_the_incident_or_creates_one(page: StatuspageFake) -> None:
    """A rollback with the deploy's incident moves it to ``identified`` with the text; one
    without an incident creates a realtime incident ``investigating``.
    Mutation tried: creating a new incident even when thread_ref is given, and creating the
    no-thread one as a scheduled maintenance: this test fails on both."""
    ch = channel(page.url)
    ref = send(ch, msg("before_window", "Tuesday.", **WINDOW)).ref
    assert ref
    got = send(ch, msg("rollback", "Rolled back: the migration failed.", ref))
    assert got.ok and got.ref == ref, got
    assert page.calls[-1].body == {
        "incident": {"status": "identified", "body": "Rolled back: the migration failed."}
    }
    assert page.incidents[ref]["status"] == "identified"
    alone = send(ch, msg("failure", "Step 'migrate' failed."))
    assert alone.ok and alone.ref == "inc0002", alone
    body = page.calls[-1].body
    assert body == {
        "incident": {
            "name": "Media: failure",
            "body": "Step 'migrate' failed.",
            "status": "investigating",
        }
    }
    assert "incident created (investigating)" in alone.detail


def test_maintenance_refusing_identified_gets_an_incident(page: StatuspageFake) -> None:
    """A page that refuses an incident status on a scheduled maintenance (422): a rollback
    then creates a realtime incident instead of being lost, and says so.
    Mutation tried: returning the 422 as the answer (no fallback): this test fails."""
    page.strict = True
    ch = channel(page.url)
    ref = send(ch, msg("before_window", "Tuesday.", **WINDOW)).ref
    got = send(ch, msg("watch_critical", "Error rate 12%.", ref))
    assert got.ok and got.ref == "inc0002", got
    assert f"incident {ref} refused the update: HTTP 422" in got.detail
    assert page.incidents["inc0002"]["status"] == "investigating"
    assert page.incidents[str(ref)]["status"] == "scheduled"


def test_update_without_an_incident_creates_one(page: StatuspageFake) -> None:
    """A during update with no incident yet creates a realtime incident (nothing lost) and
    the detail says why; a deleted incident (404) likewise.
    Mutation tried: dropping the 404 fallback: this test fails."""
    ch = channel(page.url)
    got = send(ch, msg("during", "Half done."))
    assert got.ok and got.ref == "inc0001", got
    assert "no incident of this deploy yet for 'during'" in got.detail
    assert page.incidents["inc0001"]["status"] == "investigating"
    gone = send(ch, msg("phase_end", "Phase done.", "inc9999"))
    assert gone.ok and gone.ref == "inc0002", gone
    assert "incident inc9999 gone: HTTP 404" in gone.detail


def test_notify_test_reads_the_page_and_posts_nothing(page: StatuspageFake) -> None:
    """``tminus notify test`` checks the page and the token without a public post.
    Mutation tried: handling ``test`` as an update (it creates an incident): this test fails."""
    got = send(channel(page.url), msg("test", "A test."))
    assert got.ok, got
    assert "nothing posted" in got.detail
    assert [c.method for c in page.calls] == ["GET"]
    assert page.incidents == {}


def test_401_is_final_and_the_token_never_shows(page: StatuspageFake) -> None:
    """A wrong token: 401, retry False, and neither token appears in the detail even though
    the page echoes nothing; an echoing server is masked too.
    Mutation tried: treating 401 as retryable: this test fails."""
    wrong = channel(page.url, token="wrong-" + SECRET)
    got = send(wrong, msg("before_window", "x", **WINDOW))
    assert not got.ok and got.retry is False, got
    assert "HTTP 401" in got.detail
    assert SECRET not in got.detail and "wrong-" not in got.detail
    assert page.calls[0].headers["Authorization"] == f"OAuth sp-wrong-{SECRET}"


STATUSES = [(429, True), (500, True), (503, True), (403, False), (404, False), (422, False)]


@pytest.mark.parametrize(("status", "retry"), STATUSES)
def test_retry_by_status(page: StatuspageFake, status: int, retry: bool) -> None:
    """429 and 5xx are worth a retry; 403, 404 and 422 on a create are not.
    Mutation tried: retry=True for every failure: this test fails."""
    page.fail = [status]
    got = send(channel(page.url), msg("failure", "x"))
    assert not got.ok and got.retry is retry, got
    assert f"HTTP {status}" in got.detail


def test_echoed_token_is_hidden(http: Recorder) -> None:
    """A server that echoes the Authorization header in its 400: the detail hides the
    token, even a literal one the secrets' masking does not know.
    Mutation tried: leaving the token out of the notifier's hidden values: this test fails."""

    def respond(req: Any) -> Any:
        return 400, {"error": "bad request from " + req.headers["Authorization"]}

    http.respond = respond
    literal = "literal-Kq81vD0"
    got = send(channel(http.url + f"/v1/pages/{PAGE_ID}", token=literal), msg("failure", "x"))
    assert not got.ok and not got.retry, got
    assert http.requests[0].headers["Authorization"] == f"OAuth sp-{literal}"
    assert literal not in got.detail and "OAuth ***" in got.detail


def test_timeout_and_refused_retry(http: Recorder) -> None:
    """A page that hangs: timed out, retry; nobody listening: retry.
    Mutation tried: removing the asyncio timeout and httpx's: the first part fails."""
    http.delay = 5.0
    got = send(channel(http.url + f"/v1/pages/{PAGE_ID}"), msg("failure", "x"), timeout=0.5)
    assert not got.ok and got.retry and got.detail == "timed out after 0.5 s", got
    down = send(channel(f"http://127.0.0.1:{free_port()}/v1/pages/{PAGE_ID}"), msg("during", "x"))
    assert not down.ok and down.retry, down
    assert SECRET not in down.detail
