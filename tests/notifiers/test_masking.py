"""A secret passed through every field of a message and every credential of a channel never
appears in any notifier's ``detail``, even when the receiver repeats it in its answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from tminus.notifiers.base import Delivery, get_notifier
from tminus.plan.model import NotificationChannel

from .conftest import (
    SECRET,
    USER,
    Cert,
    Handler,
    Recorder,
    Reply,
    Request,
    context,
    free_port,
    message,
    start_smtp,
)

#: A literal credential in a URL, not a ${secret}: the resolver does not know it, so only the
#: notifier's own scrubbing hides it.
URL_TOKEN = "T0K3N-lit3ral-9f8e7d"
SECRET_MESSAGE = message(
    title=f"Deploy with {SECRET}",
    text=f"password={SECRET}",
    link=f"http://tminus.example/d/{SECRET}",
    facts={"token": SECRET, SECRET: "as a name"},
)


def send(kind: str, data: dict[str, Any], timeout: float = 3.0) -> Delivery:
    ch = NotificationChannel.model_validate({"kind": kind, **data})
    return asyncio.run(get_notifier(kind).send(ch, SECRET_MESSAGE, context(timeout)))


def clean(got: Delivery) -> None:
    assert SECRET not in got.detail, "a secret leaked into the detail"
    assert URL_TOKEN not in got.detail, "the URL's token leaked into the detail"
    assert SECRET[:8] not in got.detail, "half a secret leaked (cut before masking)"


def echo(req: Request) -> Reply:
    """A receiver's error that repeats what it was sent (the title) and where (the path)."""
    doc = req.json()
    return 400, f"bad {doc.get('text') or doc['message']['title']} at {req.path}"


def test_http_notifiers_never_report_a_secret(http: Recorder) -> None:
    """Webhook and Slack (webhook and Web API): the receiver echoes the body (with the
    secret) and the URL's path (with the token) in its error; success and refused
    connections too. Mutation tried: dropping ctx.mask in scrub, and dropping the URL parts
    from the hidden values: this test fails on both."""
    http.respond = echo
    url = f"{http.url}/hooks/{URL_TOKEN}"
    results = [
        send("webhook", {"url": url, "secret": "${hook_key}", "headers": {"X": "${hook_key}"}}),
        send("slack", {"url": url}),
    ]
    http.respond = lambda r: (200, {"ok": False, "error": r.json()["text"] + r.path})
    results.append(send("slack", {"url": url, "token": "${hook_key}", "channel": "C1"}))
    http.respond = lambda r: (200, {"ok": True, "ts": "1.2", "channel": "C1"})
    results.append(send("slack", {"url": url, "token": "${hook_key}", "channel": "C1"}))
    http.respond = lambda r: (200, "ok " + r.path)
    results.append(send("webhook", {"url": url}))
    dead = f"http://127.0.0.1:{free_port()}/hooks/{URL_TOKEN}"
    results += [send("webhook", {"url": dead}), send("slack", {"url": dead})]
    assert [r.ok for r in results] == [False, False, False, True, True, False, False]
    assert all(SECRET.encode() in r.body for r in http.requests)  # the receivers saw it ...
    for got in results:
        clean(got)  # ... no detail repeats it
    assert "***" in results[0].detail and "***" in results[2].detail


class Repeater(Handler):
    """An SMTP server that rejects the message quoting its subject (with the secret)."""

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        lines = content.decode().splitlines()
        subject = next(line for line in lines if line.startswith("Subject:"))
        return f"554 5.7.1 rejected {subject}"


@pytest.mark.usefixtures("trust")
def test_email_never_reports_a_secret(cert: Cert) -> None:
    """The SMTP server quotes the subject (with the secret) in a 554; a wrong password that
    is a literal (not a ${secret}) is not repeated either.
    Mutation tried: reporting the server's reply unmasked: this test fails."""
    ctl, box = start_smtp(cert, "starttls", handler=Repeater)
    base = {"smtp": f"127.0.0.1:{box.port}", "to": ["ops@example.com"], "username": USER}
    try:
        rejected = send("email", base | {"password": "${smtp_password}"})
        wrong = send("email", base | {"password": URL_TOKEN})
    finally:
        ctl.stop()
    assert not rejected.ok and not rejected.retry
    assert rejected.detail.startswith("554 5.7.1 rejected Subject: [media prod] Deploy with ***")
    assert not wrong.ok and wrong.detail.startswith("535")
    clean(rejected)
    clean(wrong)
