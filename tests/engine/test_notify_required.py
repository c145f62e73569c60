"""``required: true`` on a channel (issue #16): a message a run records for it must be
delivered before the run goes past the point that recorded it. A receiver that refuses it for
good, or does not take it within ``required_within``, pauses the deploy with a reason naming
the channel and the receiver's answer; ``tminus resume`` sends it again (the operator fixed
the channel), ``--skip-step`` goes on without it. Real HTTP receivers on loopback.

Mutations tried: ``required_gate`` returning None at once → the step after the phase start
runs while the receiver refuses the message (``test_a_refused_message...`` fails: the
step's file exists, the deploy succeeds); ``answer_required`` not re-queueing failed rows →
the resume pauses again (``...resume_sends_it_again`` fails); ``answer_required`` ignoring
``skip`` → ``apply_resume_action`` finds no failed step: "no failed or interrupted step to
skip" (``test_skip_step_goes_on...`` fails).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Tm
from tests.engine.test_outbox import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _plan(port: int, within: str = "") -> str:
    return f"""\
tminus: 1
name: req
environment: test
notifications:
  channels:
    hook:
      kind: webhook
      url: http://127.0.0.1:{port}/hook
      required: true
{within}    chat:
      kind: webhook
      url: http://127.0.0.1:{port}/chat
  rules:
    - when: phase_start
      channels: [hook, chat]
      message: "phase {{{{ phase.name }}}} starts"
    - when: paused
      channels: [chat]
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: run
        name: the step after the message
        command: "touch step-ran"
"""


def _tm(tmp_path: Path) -> Tm:
    return Tm(tmp_path)


def _to(receiver: Receiver, path: str) -> list[dict[str, object]]:
    return [r for r in receiver.requests if r["path"] == path]


def test_a_refused_message_pauses_the_deploy_then_resume_sends_it_again(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.status = 400  # the channel's set-up is wrong: not worth a retry
    tm = _tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(_plan(receiver.port))
    tm("run", "plan.yaml")
    d = tm.json("status", "req-1")
    assert d["state"] == "paused"
    assert "required channel 'hook'" in d["reason"] and "HTTP 400" in d["reason"]
    assert "tminus resume req-1" in d["reason"]
    assert not (tmp_path / "step-ran").exists()  # the run did not go past the message
    log = tm("log", "req-1", check=0).stdout
    assert "notify.blocked" in log
    receiver.status = 200  # fixed
    tm("resume", "req-1", check=0)
    assert tm.json("status", "req-1")["state"] == "succeeded"
    assert (tmp_path / "step-ran").exists()
    hook = [r for r in tm.json("notifications", "req-1") if r["channel"] == "hook"]
    assert [r["state"] for r in hook] == ["sent"]
    assert len(_to(receiver, "/hook")) == 2  # refused once, delivered once


def test_a_channel_that_is_not_required_never_holds_the_run(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.status = 400
    tm = _tm(tmp_path)
    plan = _plan(receiver.port).replace("      required: true\n", "")
    (tmp_path / "plan.yaml").write_text(plan)
    tm("run", "plan.yaml", check=0)
    assert tm.json("status", "req-1")["state"] == "succeeded"
    assert (tmp_path / "step-ran").exists()


def test_a_message_not_delivered_within_the_bound_pauses_the_deploy(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.status = 503  # worth a retry: pending, with backoff, never delivered in time
    tm = _tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(_plan(receiver.port, within="      required_within: 1s\n"))
    tm("run", "plan.yaml")
    d = tm.json("status", "req-1")
    assert d["state"] == "paused"
    assert "did not get" in d["reason"] and "within 1 s" in d["reason"]
    assert "HTTP 503" in d["reason"]
    assert not (tmp_path / "step-ran").exists()


def test_skip_step_goes_on_without_the_message(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 400
    tm = _tm(tmp_path)
    (tmp_path / "plan.yaml").write_text(_plan(receiver.port))
    tm("run", "plan.yaml")
    assert tm.json("status", "req-1")["state"] == "paused"
    tm("resume", "req-1", "--skip-step", check=0)
    assert tm.json("status", "req-1")["state"] == "succeeded"
    assert (tmp_path / "step-ran").exists()
    log = tm("log", "req-1", check=0).stdout
    assert "notify.waived" in log
