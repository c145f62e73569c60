"""Fixtures of the notifier tests over the real receivers of :mod:`tests.notifiers.receivers`
(a recording HTTP server, aiosmtpd with STARTTLS or SMTPS on a self-signed certificate made
here, and AUTH), and the tests' sample message and send context."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.notifiers.receivers import (
    PASSWORD,
    SECRET,
    USER,
    Cert,
    Handler,
    Mailbox,
    Recorder,
    Reply,
    Request,
    free_port,
    make_cert,
    recording_server,
    start_smtp,
)
from tminus.notifiers.base import Message, SendContext

__all__ = [
    "PASSWORD",
    "SECRET",
    "USER",
    "Cert",
    "Handler",
    "Mailbox",
    "Recorder",
    "Reply",
    "Request",
    "context",
    "free_port",
    "mask",
    "message",
    "start_smtp",
]


def mask(text: str) -> str:
    """As the engine's resolver masks: every secret value replaced by ``***``."""
    return text.replace(SECRET, "***")


def context(timeout: float = 5.0, **kw: Any) -> SendContext:
    """A context whose resolver knows the secrets ``${hook_key}`` and ``${smtp_password}``."""

    def resolve(text: str) -> str:
        for ref in ("${hook_key}", "${smtp_password}"):
            text = text.replace(ref, SECRET)
        return text

    return SendContext(resolve=resolve, mask=mask, timeout=timeout, **kw)


def message(**kw: Any) -> Message:
    base: dict[str, Any] = {
        "key": "media-1/rule/0/window_start:0",
        "deploy_id": "media-1",
        "plan": "media",
        "environment": "prod",
        "when": "window_start",
        "title": "Maintenance window opens",
        "text": "The media service is read-only for 20 minutes.",
        "severity": "warning",
        "state": "running",
        "phase": "migrate",
        "link": "http://tminus.example/deploys/media-1",
        "facts": {"ETA": "20 min", "Downtime so far": "0 s"},
        "at": "2026-12-06T19:00:00+00:00",
    }
    return Message(**(base | kw))


@pytest.fixture
def http() -> Iterator[Recorder]:
    with recording_server() as rec:
        yield rec


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    """A self-signed certificate for localhost and 127.0.0.1 (it is its own CA)."""
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def trust(cert: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client trusts the test's self-signed certificate (and nothing else)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(cert.cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
