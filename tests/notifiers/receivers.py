"""Real receivers for notification tests, shared by tests/notifiers/ and the seed 002
rehearsal (tests/serve/test_comms_rehearsal.py): a recording HTTP server, a self-signed
certificate, and an SMTP server (aiosmtpd) with STARTTLS or SMTPS and AUTH, or plain for a
``security: none`` relay. The Statuspage stand-in is :mod:`tests.notifiers.statuspage_fake`.

Nothing here is a mock: every receiver listens on a free port of 127.0.0.1 and the code
under test reaches it over the network.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: The secret of the notifier tests (the SMTP password, a webhook key).
SECRET = "s3cr3t-Zq7xw9"
USER, PASSWORD = "deploybot", SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- HTTP ------------------------------------------------------------------------------------

Reply = tuple[int, Any]  # status, body (a dict is sent as JSON)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """A real HTTP server on 127.0.0.1 that records every request and answers with
    ``respond(request)`` (after ``delay`` seconds)."""

    respond: Callable[[Request], Reply] = lambda r: (200, "ok")
    delay: float = 0.0
    requests: list[Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    url: str = ""


@contextmanager
def recording_server() -> Iterator[Recorder]:
    """A :class:`Recorder` listening on a free port of 127.0.0.1 (``rec.url``) for POSTs."""
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            req = Request("POST", self.path, dict(self.headers.items()), self.rfile.read(length))
            rec.requests.append(req)
            if rec.delay:
                rec.release.wait(rec.delay)
            status, body = rec.respond(req)
            data = json.dumps(body).encode() if isinstance(body, dict) else str(body).encode()
            try:
                self.send_response(status)
                kind = "application/json" if isinstance(body, dict) else "text/plain"
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (the timeout test)
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rec
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()


# -- TLS and SMTP ----------------------------------------------------------------------------


@dataclass
class Cert:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def make_cert(where: Path) -> Cert:
    """A self-signed certificate for localhost and 127.0.0.1 (it is its own CA), in ``where``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tminus test SMTP")])
    now = dt.datetime.now(dt.UTC)
    built = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    out = Cert(where / "cert.pem", where / "key.pem")
    out.cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out


@dataclass
class Mailbox:
    port: int
    received: list[tuple[Envelope, Session]] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)  # (user, accepted)
    #: An SMTP reply to RCPT TO for each address (e.g. "550 5.1.1 no such user").
    rcpt: dict[str, str] = field(default_factory=dict)


class Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, _: Any
    ) -> str:
        if address in self.box.rcpt:
            return self.box.rcpt[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.box.received.append((envelope, session))
        return f"250 2.0.0 Ok: queued as Q{len(self.box.received):04d}"


def start_smtp(
    cert: Cert | None,
    mode: str,
    *,
    offer_starttls: bool = True,
    handler: type[Handler] = Handler,
    port: int | None = None,
) -> tuple[Controller, Mailbox]:
    """aiosmtpd on 127.0.0.1: ``starttls`` (STARTTLS required before AUTH), ``tls``, or
    ``none`` (plain SMTP, no AUTH offered over it: a local relay; ``cert`` may be None)."""
    box = Mailbox(port or free_port())

    def authenticate(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        user, password = data.login.decode(), data.password.decode()
        good = user == USER and password == PASSWORD
        box.logins.append((user, good))
        return AuthResult(success=good, handled=False)  # aiosmtpd then answers 535

    kw: dict[str, Any] = {"authenticator": authenticate, "auth_require_tls": True}
    if mode == "none":
        pass  # AUTH requires TLS, which is not offered: no password can be sent in clear
    elif mode == "tls":
        # TLS from the first byte; aiosmtpd only knows of STARTTLS's TLS, so it must be told
        # AUTH is fine here (the listener speaks nothing but TLS).
        assert cert is not None
        kw["ssl_context"] = cert.server_context()
        kw["auth_require_tls"] = False
    elif offer_starttls:
        assert cert is not None
        kw["tls_context"] = cert.server_context()
        kw["require_starttls"] = True
    else:
        kw["auth_require_tls"] = False
    ctl = Controller(handler(box), hostname="127.0.0.1", port=box.port, **kw)
    ctl.start()
    return ctl, box
