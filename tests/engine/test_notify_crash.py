"""kill -9 between "recorded" and "sent" (issue #16): a real ``tminus run`` records a
message in the outbox and is SIGKILLed before anything sends it; ``tminus resume`` delivers it,
and the receiver (a real HTTP server on loopback, slow to answer) gets it exactly once, however
often the deploy is resumed afterwards.

The crash point is the existing seam's ``TMINUS_CRASH_AFTER_EFFECTS=1``
(:func:`tminus.faults.effect_done`): the runner kills itself right after its first action's
effect (the ``notify`` step: the message recorded in the outbox, with its ``notify`` event)
and before that step's end is recorded. The test checks that the crash happened there (the
crash report names the step) and that nothing had been sent (the receiver saw no request, the
row is pending with no attempt and no lease) before it resumes.

Mutation tried: the ``notify`` step's message key made unique per attempt (a uuid appended
in ``step_notifier``): the step, in flight at the crash, is re-run on resume and records a
second row → the receiver gets the message twice (``len(got) == 1`` fails).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Tm
from tests.engine.test_outbox import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.delay = 0.5  # slow: an answer takes half a second
    yield r
    r.close()


PLAN = """\
tminus: 1
name: crash
environment: test
notifications:
  channels:
    hook:
      kind: webhook
      url: http://127.0.0.1:{port}/hook
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: notify
        message: the deploy of crash goes on
        channels: [hook]
      - kind: run
        name: after the message
        command: "touch after"
"""


def test_a_message_recorded_before_a_kill_9_is_delivered_once_after_resume(
    tmp_path: Path, receiver: Receiver
) -> None:
    tm = Tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(PLAN.format(port=receiver.port))
    report = tmp_path / "crash.jsonl"
    run = tm(
        "run",
        "plan.yaml",
        env={"TMINUS_CRASH_AFTER_EFFECTS": "1", "TMINUS_CRASH_REPORT": str(report)},
    )
    assert run.returncode == -9, (run.returncode, run.stdout, run.stderr)
    crash = json.loads(report.read_text().splitlines()[0])
    assert crash["point"] == "effect" and crash["inflight"] == "phase/0/step/0"
    # recorded, not sent
    rows = tm.json("notifications", "crash-1")
    assert [(r["channel"], r["state"], r["attempts"]) for r in rows] == [("hook", "pending", 0)]
    assert receiver.requests == []
    assert not (tmp_path / "after").exists()

    tm("resume", "crash-1", check=0)
    assert tm.json("status", "crash-1")["state"] == "succeeded"
    assert (tmp_path / "after").exists()
    got = [r for r in receiver.requests if r["path"] == "/hook"]
    assert len(got) == 1
    assert got[0]["body"]["message"]["text"] == "the deploy of crash goes on"
    rows = tm.json("notifications", "crash-1")
    assert [(r["state"], r["attempts"]) for r in rows] == [("sent", 1)]

    tm("resume", "crash-1")  # a terminal deploy: nothing is sent again
    assert len([r for r in receiver.requests if r["path"] == "/hook"]) == 1
