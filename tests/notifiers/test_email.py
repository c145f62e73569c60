"""``kind: email`` against a real SMTP server (aiosmtpd) with STARTTLS or SMTPS on a
self-signed certificate, and AUTH."""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest

from tminus.notifiers.base import Delivery, Message, get_notifier
from tminus.notifiers.email import message_id
from tminus.plan.model import NotificationChannel

from .conftest import SECRET, USER, Cert, Mailbox, context, message, start_smtp


def channel(box: Mailbox, **kw: Any) -> NotificationChannel:
    data = {
        "kind": "email",
        "smtp": f"127.0.0.1:{box.port}",
        "to": ["ops@example.com", "DBA@example.com"],
        "from": "tminus@example.com",
        "username": USER,
        "password": "${smtp_password}",
    }
    return NotificationChannel.model_validate(data | kw)


def send(ch: NotificationChannel, msg: Message | None = None, **kw: Any) -> Delivery:
    ctx = context(**kw)
    return asyncio.run(get_notifier("email").send(ch, msg or message(), ctx))


def parsed(box: Mailbox, i: int = 0) -> EmailMessage:
    envelope, _ = box.received[i]
    raw = envelope.original_content or envelope.content
    assert isinstance(raw, bytes)
    mail = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    return mail


@pytest.fixture
def starttls(cert: Cert, trust: None) -> Any:
    ctl, box = start_smtp(cert, "starttls")
    yield box
    ctl.stop()


def test_starttls_auth_both_parts(starttls: Mailbox) -> None:
    """The mail arrives over STARTTLS after AUTH, with plain and HTML parts, To = channel +
    roles' contacts without duplicates, the subject, a Message-ID from the key and the
    X-Tminus headers; the detail is the server's final reply.
    Mutation tried: not calling login(), and not adding ctx.recipients: this test fails."""
    box = starttls
    got = send(channel(box), recipients=["dba@example.com", "Lead <lead@example.com>"])
    assert got.ok, got
    assert got.detail == "250 2.0.0 Ok: queued as Q0001"
    assert got.ref == message_id("media-1/rule/0/window_start:0")
    assert box.logins == [(USER, True)]
    envelope, session = box.received[0]
    assert session.authenticated and session.ssl is not None  # TLS, then AUTH
    assert envelope.rcpt_tos == ["ops@example.com", "DBA@example.com", "lead@example.com"]
    mail = parsed(box)
    assert mail["Subject"] == "[media prod] Maintenance window opens"
    assert mail["From"] == "tminus@example.com"
    assert mail["To"] == "ops@example.com, DBA@example.com, Lead <lead@example.com>"
    assert mail["Message-ID"] == message_id("media-1/rule/0/window_start:0")
    assert mail["X-Tminus-Deploy"] == "media-1"
    assert mail["X-Tminus-Key"] == "media-1/rule/0/window_start:0"
    assert mail.get_content_type() == "multipart/alternative"
    plain = mail.get_body(("plain",))
    rich = mail.get_body(("html",))
    assert plain is not None and rich is not None
    assert "read-only for 20 minutes" in plain.get_content()
    assert "ETA:" in plain.get_content() and "http://tminus.example/deploys/media-1" in (
        plain.get_content()
    )
    assert "<h2>Maintenance window opens</h2>" in rich.get_content()
    assert "<td>20 min</td>" in rich.get_content()


def test_same_key_same_message_id_and_thread(starttls: Mailbox) -> None:
    """Two tries of one message carry the same Message-ID (a receiver can drop the
    duplicate); a later mail answers the first one (In-Reply-To its ref); a newline in a
    title cannot add a header.
    Mutation tried: a random Message-ID (make_msgid): this test fails."""
    box = starttls
    first = send(channel(box))
    again = send(channel(box))
    later = send(
        channel(box),
        message(
            key="media-1/rule/2/success:0",
            title="Done\nBcc: x@evil.example",
            facts={"thread_ref": first.ref or ""},
        ),
    )
    assert first.ok and again.ok and later.ok
    one, two, three = (parsed(box, i) for i in range(3))
    assert one["Message-ID"] == two["Message-ID"] != three["Message-ID"]
    assert three["In-Reply-To"] == one["Message-ID"] == three["References"]
    assert three["Bcc"] is None and three["Subject"] == "[media prod] Done Bcc: x@evil.example"
    assert "thread_ref" not in (three.get_body(("plain",)) or three).get_content()


def test_wrong_password_is_final_and_not_shown(starttls: Mailbox) -> None:
    """A wrong password: 535, retry=False, the password nowhere in the detail.
    Mutation tried: treating every SMTP error as retry=True: this test fails."""
    got = send(channel(starttls, password="wrong-" + SECRET))
    assert not got.ok and got.retry is False, got
    assert got.detail.startswith("535 "), got.detail
    assert SECRET not in got.detail and "wrong-" not in got.detail
    assert starttls.logins and set(starttls.logins) == {(USER, False)}  # PLAIN, then LOGIN
    assert starttls.received == []


def test_rejections_5xx_final_4xx_retry(starttls: Mailbox) -> None:
    """A recipient refused with 550 is final; with 451 it is worth a retry.
    Mutation tried: retry for all refusals: this test fails."""
    starttls.rcpt = {"ops@example.com": "550 5.1.1 no such user"}
    got = send(channel(starttls, to=["ops@example.com"]))
    assert not got.ok and got.retry is False
    assert "550 5.1.1 no such user" in got.detail
    starttls.rcpt = {"ops@example.com": "451 4.3.0 try later"}
    got = send(channel(starttls, to=["ops@example.com"]))
    assert not got.ok and got.retry is True
    assert "451 4.3.0 try later" in got.detail
    # one refused of two: delivered to the other, the refusal in the detail
    starttls.rcpt = {"ops@example.com": "550 5.1.1 no such user"}
    got = send(channel(starttls))
    assert got.ok and "refused: ops@example.com (550)" in got.detail


def test_untrusted_certificate_is_refused(cert: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without trusting the test CA the self-signed certificate fails verification (final),
    and no password was sent.
    Mutation tried: an SSL context with CERT_NONE / check_hostname=False: this test fails."""
    other = cert.cert.parent / "empty.pem"
    other.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    monkeypatch.setenv("SSL_CERT_DIR", str(cert.cert.parent / "none"))
    ctl, box = start_smtp(cert, "starttls")
    try:
        got = send(channel(box))
    finally:
        ctl.stop()
    assert not got.ok and got.retry is False, got
    assert "certificate" in got.detail
    assert box.logins == [] and box.received == []


def test_no_plaintext_fallback(cert: Cert, trust: None) -> None:
    """A server that does not offer STARTTLS: refused (final), no login, nothing sent; and
    security: none with a password is refused before connecting.
    Mutation tried: skipping STARTTLS when the server lacks it: this test fails."""
    ctl, box = start_smtp(cert, "starttls", offer_starttls=False)
    try:
        got = send(channel(box))
        assert not got.ok and got.retry is False and "STARTTLS" in got.detail
        assert box.logins == [] and box.received == []
        got = send(channel(box, security="none"))
        assert not got.ok and got.retry is False and "without TLS" in got.detail
        assert box.received == []
        plain = send(channel(box, security="none", username=None, password=None))
        assert plain.ok and plain.detail.startswith("250 "), plain
        assert len(box.received) == 1
    finally:
        ctl.stop()


def test_smtps(cert: Cert, trust: None) -> None:
    """security: tls speaks TLS from the first byte (SMTPS) and logs in.
    Mutation tried: connecting with plain SMTP for tls: this test fails (no greeting)."""
    ctl, box = start_smtp(cert, "tls")
    try:
        got = send(channel(box, security="tls"))
    finally:
        ctl.stop()
    assert got.ok, got
    assert box.logins == [(USER, True)] and len(box.received) == 1


def test_nobody_listening_retries() -> None:
    """A refused connection is worth a retry.
    Mutation tried: retry=False for OSError: this test fails."""
    from .conftest import free_port

    ch = channel(Mailbox(free_port()))
    got = send(ch, timeout=2.0)
    assert not got.ok and got.retry is True, got
    assert SECRET not in got.detail
