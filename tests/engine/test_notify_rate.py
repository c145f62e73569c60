"""``rate_limit: N/DURATION`` on a channel (issue #16): messages beyond the limit are held and
sent later, in order, never dropped; ``tminus notifications`` shows a held one as pending with
the reason. A real HTTP receiver on loopback records when each message arrived.

Mutations tried: ``deliver_due`` ignoring the limit (``rate = None``) → the four messages
arrive within a few milliseconds (``test_messages_beyond_the_limit...`` fails on the gaps)
and nothing is held (``test_a_held_message...`` fails).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm


class TimedReceiver:
    """A real HTTP server on 127.0.0.1: each POST's arrival time and JSON body."""

    def __init__(self) -> None:
        self.got: list[tuple[float, dict[str, Any]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.got.append((time.monotonic(), json.loads(body)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[TimedReceiver]:
    r = TimedReceiver()
    yield r
    r.close()


def _plan(port: int, limit: str) -> str:
    return f"""\
tminus: 1
name: rate
environment: test
notifications:
  channels:
    hook:
      kind: webhook
      url: http://127.0.0.1:{port}/hook
      rate_limit: {limit}
  rules:
    - when: phase_start
    - when: phase_end
    - when: success
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: notify
        message: from the step
"""


def test_messages_beyond_the_limit_are_held_and_sent_in_order(
    tmp_path: Path, receiver: TimedReceiver
) -> None:
    tm = Tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(_plan(receiver.port, "1/1s"))
    run = tm("run", "plan.yaml", check=0)
    assert "[notify hook: held]" in run.stdout + run.stderr
    whens = [b["message"]["when"] for _, b in receiver.got]
    assert whens == ["phase_start", "step", "phase_end", "success"]  # all, in order
    times = [t for t, _ in receiver.got]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 0.9 for g in gaps), gaps  # at most one a second
    rows = tm.json("notifications", "rate-1")
    assert [r["state"] for r in rows] == ["sent"] * 4
    assert all(r["attempts"] == 1 for r in rows)  # a hold is not an attempt


def test_a_held_message_is_listed_as_pending_with_the_reason(
    tmp_path: Path, receiver: TimedReceiver
) -> None:
    tm = Tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(_plan(receiver.port, "2/1h"))
    tm("run", "plan.yaml", check=0)
    assert len(receiver.got) == 2  # the limit's worth
    rows = tm.json("notifications", "rate-1")
    held = [r for r in rows if r["state"] == "pending"]
    assert len(held) == 2 and all(r["attempts"] == 0 for r in held)  # kept, not dropped
    assert all("held: rate limit 2/1h of channel 'hook'" in r["detail"] for r in held)
    listing = tm("notifications", "rate-1", check=0).stdout
    assert "pending" in listing and "held: rate limit 2/1h" in listing
