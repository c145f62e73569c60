"""Rollback triggers are evaluated while the phases they cover run (issue #12: they were
rendered and never evaluated). Real CLI; the trigger's check is a `command` check reading a
file the test writes, standing in for a metric (the check sources themselves are tested
against real servers elsewhere)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Tm


def _plan(action: str, phases: str = "[deploy]") -> str:
    return f"""
name: trig
environment: test
phases:
  - name: prepare
    steps:
      - kind: run
        command: "echo prepared >> ledger"
        undo: [{{kind: run, command: "echo unprepared >> ledger"}}]
  - name: deploy
    steps:
      - kind: run
        command: "touch started; for i in $(seq 100); do sleep 0.1; done; echo deployed >> ledger"
      - {{kind: run, command: "echo after >> ledger"}}
rollback_triggers:
  - name: error rate over budget
    check: {{source: command, command: "cat signal", expect: "== 0"}}
    action: {action}
    phases: {phases}
    interval: 300ms
"""


def _run(tm: Tm, text: str) -> tuple[int, str]:
    (tm.cwd / "p.yaml").write_text(text)
    (tm.cwd / "signal").write_text("0\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tminus", "run", "p.yaml"],
        cwd=tm.cwd,
        env=tm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 30
    while not (tm.cwd / "started").exists():
        assert time.time() < deadline and proc.poll() is None, "the long step never started"
        time.sleep(0.05)
    time.sleep(0.8)  # the trigger has been evaluated (and passed) at least once
    (tm.cwd / "signal").write_text("7\n")
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


def _ledger(tm: Tm) -> list[str]:
    p: Path = tm.cwd / "ledger"
    return p.read_text().split() if p.exists() else []


def test_a_firing_trigger_stops_the_step_and_rolls_back(tm: Tm) -> None:
    """`action: rollback`: the running step is stopped (it never writes "deployed"), the
    rollback runs, and the deploy's reason names the trigger as its cause.

    Mutation tried: do not start ``_watch_triggers`` in ``Engine._drive``: the deploy
    succeeds (exit 0) and this fails."""
    code, out = _run(tm, _plan("rollback"))
    assert code == 1, out
    info = tm.json("status", "trig-1")
    assert info["state"] == "rolled_back"
    assert "rollback trigger 'error rate over budget' fired" in info["reason"]
    assert _ledger(tm) == ["prepared", "unprepared"]
    types = [e["type"] for e in tm.json("log", "trig-1")]
    assert types.index("trigger.fired") < types.index("deploy.rolling_back")


def test_a_pause_trigger_lets_the_step_finish_then_pauses(tm: Tm) -> None:
    code, out = _run(tm, _plan("pause"))
    assert code == 3, out
    info = tm.json("status", "trig-1")
    assert info["state"] == "paused" and "error rate over budget" in info["reason"]
    assert _ledger(tm) == ["prepared", "deployed"]


def test_a_trigger_outside_its_phases_is_not_evaluated(tm: Tm) -> None:
    """The same failing signal, but the trigger covers only `prepare`: the deploy phase runs
    to the end."""
    code, out = _run(tm, _plan("rollback", phases="[prepare]"))
    assert code == 0, out
    assert _ledger(tm) == ["prepared", "deployed", "after"]


def test_check_rejects_a_trigger_phase_that_does_not_exist(tm: Tm) -> None:
    (tm.cwd / "p.yaml").write_text(_plan("rollback", phases="[nope]"))
    proc = tm("check", "p.yaml")
    assert proc.returncode == 2
    assert "rollback trigger 'error rate over budget' names no phase 'nope'" in (
        proc.stdout + proc.stderr
    )


def test_success_metrics_are_measured_before_a_delayed_phase(tm: Tm) -> None:
    """A plan with a 30-day cleanup phase: the success summary is recorded when the window's
    phases end (it used to wait for the cleanup, a month later)."""
    (tm.cwd / "p.yaml").write_text("""
name: later
environment: test
phases:
  - name: deploy
    steps: [{kind: run, command: "echo 3 > value"}]
  - name: cleanup
    after: 30d
    steps: [{kind: run, command: "true"}]
success_metrics:
  - name: value is 3
    check: {source: command, command: "cat value", expect: "== 3"}
""")
    assert tm("run", "p.yaml").returncode == 3
    assert tm.json("status", "later-1")["state"] == "scheduled"
    summary = [e for e in tm.json("log", "later-1") if e["type"] == "summary"]
    assert summary and summary[0]["data"]["metrics"][0]["status"] == "passed"
