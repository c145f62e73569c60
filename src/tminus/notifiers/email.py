"""``kind: email``: the message by SMTP, as plain text with an HTML alternative.

``smtp`` is ``host:port`` (the port defaults to 587 for ``security: starttls``, 465 for
``tls``, 25 for ``none``). ``starttls`` (the default) insists on STARTTLS: a server that does
not offer it is a failure, never a silent plain-text session. ``tls`` speaks TLS from the
first byte (SMTPS). Certificates are always verified against the system's trust store (or the
one ``SSL_CERT_FILE`` names). ``username``/``password`` (``${secret}`` references welcome)
log in; they are never sent without TLS (``security: none`` with a password is refused).

To is the channel's ``to`` plus the plan's roles' contacts (:attr:`SendContext.recipients`),
without duplicates; From is ``from`` or ``tminus@<hostname>``; the subject is
``[plan environment] title``. The ``Message-ID`` is derived from the message's key, so a
receiver can spot a duplicate delivery, and ``X-Tminus-Deploy``/``X-Tminus-Key`` name the
deploy and the message. The ``ref`` is that Message-ID: given back as
``message.facts["thread_ref"]``, later mails of the deploy answer it (``In-Reply-To``), so mail
clients show one conversation per deploy.

smtplib runs in a thread; each read and write gets what is left of ``ctx.timeout``.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from typing import TYPE_CHECKING, Any, ClassVar

from tminus.notifiers.base import Delivery, Message, SendContext
from tminus.notifiers.webhook import public_facts, scrub

if TYPE_CHECKING:
    from tminus.plan.model import NotificationChannel

__all__ = ["NOTIFIER", "EmailNotifier", "build", "message_id", "recipients"]

PORTS = {"starttls": 587, "tls": 465, "none": 25}


def message_id(key: str) -> str:
    """The Message-ID of the message with idempotency key ``key`` (the same on every try)."""
    return f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:40]}@tminus>"


def _line(text: str) -> str:
    """A header value: one line (a newline in a title must not start a new header)."""
    return " ".join(text.split())


def recipients(to: list[str], more: list[str]) -> list[str]:
    """``to`` then ``more``, each address once (compared case-insensitively)."""
    seen: set[str] = set()
    out: list[str] = []
    for entry in [*to, *more]:
        address = (getaddresses([entry])[0][1] or entry).strip()
        if address and address.lower() not in seen:
            seen.add(address.lower())
            out.append(entry.strip())
    return out


def _facts(message: Message) -> list[tuple[str, str]]:
    pairs = [
        ("Plan", message.plan),
        ("Environment", message.environment),
        ("Deploy", message.deploy_id),
        ("Phase", message.phase),
        ("State", message.state),
        ("Severity", message.severity),
    ]
    return [(k, v) for k, v in pairs + list(public_facts(message).items()) if v]


def _plain(message: Message) -> str:
    lines = [message.title, "", message.text, ""]
    width = max((len(k) for k, _ in _facts(message)), default=0)
    lines += [f"{k + ':':<{width + 1}} {v}" for k, v in _facts(message)]
    if message.link:
        lines += ["", f"Follow the deploy: {message.link}"]
    return "\n".join(lines) + "\n"


def _html(message: Message) -> str:
    e = html.escape
    rows = "".join(
        f'<tr><th align="left" style="padding-right:1em">{e(k)}</th><td>{e(v)}</td></tr>'
        for k, v in _facts(message)
    )
    text = "<br>".join(e(line) for line in message.text.splitlines())
    link = (
        f'<p><a href="{e(message.link, quote=True)}">Follow the deploy</a></p>'
        if message.link
        else ""
    )
    return (
        f"<!DOCTYPE html><html><body><h2>{e(message.title)}</h2><p>{text}</p>"
        f"<table>{rows}</table>{link}</body></html>\n"
    )


def build(message: Message, sender: str, to: list[str]) -> EmailMessage:
    """The email: plain text with an HTML alternative, and tminus's headers."""
    mail = EmailMessage()
    mail["Subject"] = _line(f"[{message.plan} {message.environment}] {message.title}")
    mail["From"] = sender
    mail["To"] = ", ".join(to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = message_id(message.key)
    thread = message.facts.get("thread_ref", "")
    if re.fullmatch(r"<[^<>\s]+@[^<>\s]+>", thread) and thread != mail["Message-ID"]:
        mail["In-Reply-To"] = thread
        mail["References"] = thread
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Tminus-Deploy"] = _line(message.deploy_id)
    mail["X-Tminus-Key"] = _line(message.key)
    mail.set_content(_plain(message))
    mail.add_alternative(_html(message), subtype="html")
    return mail


class _Deadline:
    """smtplib with one deadline for the whole session: each read and write may take what is
    left of it (smtplib's own timeout is per operation)."""

    sock: socket.socket | None
    last_reply: tuple[int, bytes] | None = None

    def __init__(self, *args: Any, deadline: float, **kwargs: Any) -> None:
        self.deadline = deadline
        super().__init__(*args, **kwargs)

    def _left(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the SMTP session took longer than its timeout")
        if self.sock is not None:
            self.sock.settimeout(left)

    def send(self, s: Any) -> None:
        self._left()
        super().send(s)  # type: ignore[misc]

    def getreply(self) -> tuple[int, bytes]:
        self._left()
        reply: tuple[int, bytes] = super().getreply()  # type: ignore[misc]
        return reply

    def data(self, msg: Any) -> tuple[int, bytes]:
        reply: tuple[int, bytes] = super().data(msg)  # type: ignore[misc]
        self.last_reply = reply
        return reply


class _SMTP(_Deadline, smtplib.SMTP):
    pass


class _SMTPS(_Deadline, smtplib.SMTP_SSL):
    pass


def _address(smtp: str, security: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\s]+)(?::(\d+))?", smtp.strip())
    if not m:
        raise ValueError("'smtp' must be host:port")
    host = m.group(1) or m.group(3)
    port = m.group(2) or m.group(4)
    return host, int(port) if port else PORTS[security]


def _session(
    channel: NotificationChannel,
    smtp: str,
    login: tuple[str, str] | None,
    mail: EmailMessage,
    timeout: float,
) -> tuple[str, dict[str, tuple[int, bytes]]]:
    """Connect, secure, log in and send (in a thread): the final reply and refused addresses."""
    host, port = _address(smtp, channel.security)
    context = ssl.create_default_context()
    deadline = time.monotonic() + timeout
    client: _SMTP | _SMTPS
    if channel.security == "tls":
        client = _SMTPS(host, port, timeout=timeout, context=context, deadline=deadline)
    else:
        client = _SMTP(host, port, timeout=timeout, deadline=deadline)
    try:
        client.ehlo()
        if channel.security == "starttls":
            if not client.has_extn("starttls"):
                raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS")
            client.starttls(context=context)
            client.ehlo()
        if login is not None:
            client.login(*login)
        refused = client.send_message(mail)
        code, text = client.last_reply or (250, b"")
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            pass  # the message is queued; a rude goodbye changes nothing
    finally:
        client.close()  # no QUIT after a failure: the session may be broken (a TLS error)
    return f"{code} {text.decode('utf-8', 'replace')}".strip(), refused


def _why(exc: BaseException) -> tuple[str, bool]:
    """What went wrong, and whether another try later could help."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        said = "; ".join(
            f"{who}: {code} {text.decode('utf-8', 'replace')}"
            for who, (code, text) in exc.recipients.items()
        )
        return f"all recipients refused ({said})", any(400 <= c < 500 for c in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error
        said = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        return f"{exc.smtp_code} {said}", 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return str(exc) or "the server does not support what the channel needs", False
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the server's certificate is not trusted: {exc.verify_message}", False
    if isinstance(exc, TimeoutError):
        return f"timed out ({exc})" if str(exc) else "timed out", True
    return f"{type(exc).__name__}: {exc}", True  # refused, reset, DNS: maybe later


class EmailNotifier:
    kind: ClassVar[str] = "email"
    threads: ClassVar[bool] = True

    async def send(
        self, channel: NotificationChannel, message: Message, ctx: SendContext
    ) -> Delivery:
        hidden: list[str | None] = []
        try:
            password = ctx.resolve(channel.password) if channel.password else None
            hidden.append(password)
            username = ctx.resolve(channel.username) if channel.username else None
            smtp = ctx.resolve(channel.smtp or "")
            sender = ctx.resolve(channel.sender) if channel.sender else None
            to = recipients([ctx.resolve(t) for t in channel.to], list(ctx.recipients))
        except Exception as exc:
            detail = scrub(f"{type(exc).__name__}: {exc}", hidden, ctx.mask)
            return Delivery(False, f"cannot resolve the channel's settings: {detail}")
        if (username or password) and channel.security == "none":
            return Delivery(False, "refusing to send an SMTP password without TLS (security: none)")
        if not to:
            return Delivery(False, "no recipient (the channel's 'to' is empty)")
        login = (username or "", password or "") if username or password else None
        sender = sender or f"tminus@{socket.gethostname()}"
        try:
            mail = build(message, sender, to)
            reply, refused = await asyncio.to_thread(
                _session, channel, smtp, login, mail, ctx.timeout
            )
        except Exception as exc:
            why, retry = _why(exc)
            return Delivery(False, scrub(why, hidden, ctx.mask), retry=retry)
        detail = reply
        if refused:
            detail += "; refused: " + ", ".join(
                f"{who} ({code})" for who, (code, _) in refused.items()
            )
        return Delivery(True, scrub(detail, hidden, ctx.mask), ref=mail["Message-ID"])


NOTIFIER = EmailNotifier()
