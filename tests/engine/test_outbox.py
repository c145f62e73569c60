"""Notifications through the outbox (issue #16 item 3), with a real local HTTP receiver as the
webhook channel (the stand-in for a team's webhook endpoint; real requests on loopback).

- a run's rules are recorded, then delivered once each, with what the receiver answered;
- a receiver that answers 500 gets retries with backoff, the deploy is not held, and the
  failure is visible in ``tminus status`` and ``tminus notifications``;
- a message recorded while the receiver is down is delivered once, and only once, by the
  next run (resume) once the receiver is up; ``--resend`` queues one again.

Mutations tried: ``_send_one`` leaving a delivered message *pending* (never marked sent) →
the second resume sends it again (``test_a_message_recorded_while_the_receiver_is_down...``
fails: 3 requests); ``_send_one`` marking a 5xx ``failed`` at once → no retry, no
``notify.retry`` (``test_a_failing_receiver...`` fails).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm


class Receiver:
    """A real HTTP server on 127.0.0.1 recording each POST (path, headers, JSON body)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.delay = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if outer.delay:
                    time.sleep(outer.delay)
                outer.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                )
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _plan(port: int, secret_var: bool = True) -> str:
    return f"""\
tminus: 1
name: outbox
environment: test
secrets:
  hook_key: ${{env:HOOK_KEY}}
notifications:
  channels:
    hook:
      kind: webhook
      url: http://127.0.0.1:{port}/hook
      secret: ${{hook_key}}
    console:
      kind: log
  rules:
    - when: phase_start
      channels: [hook, console]
    - when: success
      channels: [hook]
      message: "done with key ${{hook_key}}"
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: run
        name: a step
        command: "true"
"""


def _tm(tmp_path: Path) -> Tm:
    return Tm(tmp_path, {"HOOK_KEY": "s3cr3t-hook-key"})


def test_rules_are_recorded_then_delivered_once_each(tmp_path: Path, receiver: Receiver) -> None:
    tm = _tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(_plan(receiver.port))
    run = tm("run", "plan.yaml", check=0)
    assert "[notify hook,console: queued]" in run.stderr + run.stdout
    assert "[notify hook: sent]" in run.stderr + run.stdout
    bodies = [r["body"] for r in receiver.requests]
    whens = sorted(b["message"]["when"] for b in bodies)
    assert whens == ["phase_start", "success"]  # once each
    assert all(b["schema"] == "tminus.notification/1" for b in bodies)
    success = next(b for b in bodies if b["message"]["when"] == "success")
    assert success["message"]["text"] == "done with key ***"  # the secret never leaves
    assert all("s3cr3t-hook-key" not in json.dumps(r) for r in receiver.requests)
    rows = tm.json("notifications", "outbox-1")
    assert {(r["channel"], r["state"]) for r in rows} == {
        ("hook", "sent"),
        ("console", "sent"),
    }
    assert len(rows) == 3
    status = tm("status", "outbox-1", check=0).stdout
    assert "notifications: 3 sent" in status


def test_a_failing_receiver_gets_retries_and_does_not_hold_the_deploy(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.status = 500
    tm = _tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(_plan(receiver.port))
    tm("run", "plan.yaml", check=0)  # the deploy succeeds whatever the receiver says
    assert tm.json("status", "outbox-1")["state"] == "succeeded"
    rows = {r["channel"]: r for r in tm.json("notifications", "outbox-1")}
    hook = [r for r in tm.json("notifications", "outbox-1") if r["channel"] == "hook"]
    assert hook and all(r["state"] == "pending" for r in hook)  # to be tried again
    assert all("HTTP 500" in (r["detail"] or "") and "next attempt in" in r["detail"] for r in hook)
    assert rows["console"]["state"] == "sent"
    log = tm("log", "outbox-1", check=0).stdout
    assert "notify.retry" in log


def test_a_message_recorded_while_the_receiver_is_down_is_delivered_once_later(
    tmp_path: Path, receiver: Receiver
) -> None:
    tm = _tm(tmp_path)
    port = receiver.port
    receiver.close()  # down: connection refused
    plan = _plan(port).replace(
        '      - kind: run\n        name: a step\n        command: "true"\n',
        "      - kind: approve\n        name: go on\n        roles: [lead]\n",
    )
    plan = plan.replace("phases:\n", "roles:\n  lead:\n    people: [lena]\nphases:\n", 1)
    (tmp_path / "plan.yaml").write_text(plan)
    first = tm("run", "plan.yaml")
    assert first.returncode == 3  # waits for the in-phase approval
    rows = tm.json("notifications", "outbox-1")
    hook = next(r for r in rows if r["channel"] == "hook")
    assert hook["state"] == "pending" and "ConnectError" in (hook["detail"] or "")
    up = Receiver.__new__(Receiver)  # the receiver comes back on the same port
    Receiver.__init__(up)
    up.server.server_close()
    up.server = type(up.server)(("127.0.0.1", port), up.server.RequestHandlerClass)
    up.thread = threading.Thread(target=up.server.serve_forever, daemon=True)
    up.thread.start()
    try:
        tm("approve", "outbox-1", "--role", "lead", "--as", "lena", check=0)
        # the backoff of the first failure has not passed yet: queue it now
        tm("notifications", "outbox-1", "--resend", str(hook["id"]), check=0)
        tm("resume", "outbox-1", check=0)
        got = [r["body"]["message"]["when"] for r in up.requests]
        assert got.count("phase_start") == 1 and got.count("success") == 1
        tm("resume", "outbox-1")  # nothing is sent twice
        assert len(up.requests) == 2
    finally:
        up.close()


def test_a_slow_receiver_does_not_hold_the_deploy(tmp_path: Path, receiver: Receiver) -> None:
    """The receiver takes 30 s: the steps run on, the run ends after its 5 s flush and leaves
    the message pending, unclaimed, for a server or the next run.

    Mutation tried: ``flush`` awaiting the pump without its deadline → the run waits for the
    receiver's time-out (~15 s): "still sending after 5 s" is missing and the test fails."""
    receiver.delay = 30
    tm = _tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(_plan(receiver.port))
    run = tm("run", "plan.yaml", check=0)
    assert "still sending after 5 s" in run.stdout + run.stderr
    assert tm.json("status", "outbox-1")["state"] == "succeeded"
    hook = [r for r in tm.json("notifications", "outbox-1") if r["channel"] == "hook"]
    assert hook and all(r["state"] == "pending" for r in hook)


def test_a_row_whose_lease_ran_out_in_a_slow_lane_is_not_sent_by_its_first_claimer(
    tmp_path: Path,
) -> None:
    """A sender claims two messages of one channel; its lane is slow (sends before the second
    take longer than the lease), so another sender claims the second. The first sender must not send
    the second too: ``take`` renews its lease just before a send only if it still holds it.
    Mutation: ``take`` without its ``lease_owner``/``lease_until`` condition: a's take of the
    second succeeds, and both senders would send it (before ``take``, the rehearsal of seed
    002 saw updates arrive 2 or 3 times). What this does not test: that ``deliver_due``'s
    lane calls ``take`` (one line before ``_send_one``)."""
    from datetime import timedelta

    from tminus import clock
    from tminus.store import Store

    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        d = store.create_deploy(
            plan_name="p",
            environment="e",
            plan_path="p.yaml",
            plan_text="",
            plan_hash="0" * 64,
            started_by="t",
            overrides={},
        )
        rows = [
            {"key": f"k/{i}", "channel": "hook", "kind": "webhook", "message": {"key": f"k/{i}"}}
            for i in range(2)
        ]
        store.enqueue(d, rows)
        lease = timedelta(seconds=60)
        first = store.claim_outbox("a", lease)
        assert [r["key"] for r in first] == ["k/0", "k/1"]
        assert store.take(int(first[0]["id"]), "a", lease)
        # the first send is answered (a send is bounded: 15 s) ...
        assert store.settle(int(first[0]["id"]), "a", state="sent", detail="HTTP 200")
        # ... but the lane was slow: the second comes up 61 s after the claim
        before = clock.install(clock.OffsetClock(timedelta(seconds=61)))
        try:
            second = store.claim_outbox("b", lease)
            assert [r["key"] for r in second] == ["k/1"]  # its lease had run out: b has it
            assert not store.take(int(first[1]["id"]), "a", lease)  # a must not send it
            assert store.take(int(second[0]["id"]), "b", lease)
        finally:
            clock.install(before)
    finally:
        store.close()
