"""Timeouts and aborts stop the work before anything else runs (issue #11, findings 1, 2, 7).

Each test runs the real CLI against real servers (PostgreSQL from the machine's cluster).
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Tm


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _events(tm: Tm, deploy: str) -> list[dict[str, Any]]:
    return list(tm.json("log", deploy))


def _ts(e: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(e["ts"]))


def _spawn(tm: Tm, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tminus.testing.seam", *args],
        cwd=tm.cwd,
        env=tm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_timed_out_sql_is_cancelled_before_the_rollback(tm: Tm, pg_url: str) -> None:
    """A `sql` step with `timeout: 1s` whose transaction inserts a row and then sleeps 5 s: the
    statement is cancelled on the server and its transaction rolled back before the deploy's
    rollback starts; 6 s later the row is still not there.

    Mutation tried: run the sql step with plain ``asyncio.to_thread`` (no cancel callback):
    the INSERT commits about 5 s after the deploy is recorded rolled back, and this fails."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int)")
    _write(
        tm.cwd / "p.yaml",
        f"""
name: slowsql
environment: test
targets:
  databases:
    app: {{kind: postgres, url: "{pg_url}"}}
phases:
  - name: one
    steps:
      - kind: run
        command: "echo started >> effects.log"
        undo: [{{kind: run, command: "echo undone >> effects.log"}}]
      - kind: sql
        database: app
        timeout: 1s
        statements: ["INSERT INTO t VALUES (1)", "SELECT pg_sleep(5)"]
""",
    )
    t0 = time.monotonic()
    proc = tm("run", "p.yaml")
    took = time.monotonic() - t0
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert tm.latest()["state"] == "rolled_back"
    assert "timed out after 1s; its work was stopped" in proc.stdout + proc.stderr
    events = _events(tm, "slowsql-1")
    types = [e["type"] for e in events]
    assert types.index("step.stopped") < types.index("deploy.rolling_back"), types
    # Measured from the recorded events, not around the CLI (whose start-up on a loaded
    # machine is no part of what is tested): the sql step's start to the rollback's start.
    sql_start = next(
        e for e in events if e["type"] == "step.started" and e["key"] == "phase/0/step/1"
    )
    rolling = events[types.index("deploy.rolling_back")]
    waited = (_ts(rolling) - _ts(sql_start)).total_seconds()
    assert waited < 4, f"the deploy waited for the statement ({waited:.1f}s)"
    time.sleep(max(0.0, 6.5 - took))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
        active = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(5)%' "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
        assert active == (0,)
    assert (tm.cwd / "effects.log").read_text().split() == ["started", "undone"]


LONG_LAST = """
name: longlast
environment: test
phases:
  - name: one
    steps:
      - {kind: run, name: a, command: "echo a >> effects.log"}
      - kind: run
        name: b
        command: "touch started; while true; do echo tick >> ticks.log; sleep 0.1; done"
"""


def test_abort_stops_the_last_step_within_a_second(tm: Tm) -> None:
    """An abort during the deploy's last (long) step stops it: the step's process group is
    killed, the deploy ends aborted, never succeeded; measured from the recorded request to
    the recorded stop, under a second.

    Mutation tried: ``watch_abort=False`` in ``attempt.execute``: the step runs on, the
    runner never ends, and this fails on the runner's timeout."""
    _write(tm.cwd / "p.yaml", LONG_LAST)
    runner = _spawn(tm, "run", "p.yaml")
    try:
        _wait_for(tm.cwd / "started")
        proc = tm("abort", "longlast-1", env={"TMINUS_OPERATOR": "carol"})
        assert proc.returncode == 0, proc.stderr
        assert runner.wait(timeout=10) == 1
    finally:
        if runner.poll() is None:
            runner.kill()
    info = tm.json("status", "longlast-1")
    assert info["state"] == "aborted" and "carol" in info["reason"]
    events = _events(tm, "longlast-1")
    asked = next(e for e in events if e["type"] == "deploy.abort_requested")
    stopped = next(e for e in events if e["type"] == "step.stopped")
    assert (_ts(stopped) - _ts(asked)).total_seconds() < 1.0
    size = (tm.cwd / "ticks.log").stat().st_size
    time.sleep(0.5)
    assert (tm.cwd / "ticks.log").stat().st_size == size, "the step's process still runs"


def test_abort_stops_a_wait_step(tm: Tm) -> None:
    """`wait: 60s` honours an abort within a second (it used to sleep out its duration).

    Mutation tried: ``watch_abort=False``: the runner waits 60 s; this fails on its timeout."""
    _write(
        tm.cwd / "p.yaml",
        """
name: waits
environment: test
phases:
  - name: one
    steps:
      - {kind: run, command: "touch started"}
      - {kind: wait, duration: 60s}
      - {kind: run, command: "touch never"}
""",
    )
    runner = _spawn(tm, "run", "p.yaml")
    try:
        _wait_for(tm.cwd / "started")
        time.sleep(0.3)
        t0 = time.monotonic()
        assert tm("abort", "waits-1").returncode == 0
        assert runner.wait(timeout=10) == 1
        assert time.monotonic() - t0 < 5
    finally:
        if runner.poll() is None:
            runner.kill()
    assert tm.json("status", "waits-1")["state"] == "aborted"
    assert not (tm.cwd / "never").exists()


def test_abort_after_the_last_step_is_reported_not_dropped(tm: Tm) -> None:
    """An abort that arrives after the last step did its work (here: during the last phase's
    verify) leaves the deploy succeeded, and says so on the console and in the log.

    Mutation tried: remove the report in ``Engine._complete``: no ``deploy.abort_too_late``
    event, and this fails."""
    _write(
        tm.cwd / "p.yaml",
        """
name: late
environment: test
phases:
  - name: one
    steps:
      - {kind: run, command: "echo a >> effects.log"}
    verify:
      - {source: command, command: "touch verifying; sleep 2; echo 1", expect: "== 1"}
""",
    )
    runner = _spawn(tm, "run", "p.yaml")
    try:
        _wait_for(tm.cwd / "verifying")
        assert tm("abort", "late-1").returncode == 0
        out, err = runner.communicate(timeout=30)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0
    assert "arrived after the last step" in out + err
    assert tm.json("status", "late-1")["state"] == "succeeded"
    assert "deploy.abort_too_late" in [e["type"] for e in _events(tm, "late-1")]


ROLLBACK_PLAN = """
name: rb
environment: test
phases:
  - name: one
    steps:
      - kind: run
        name: s1
        command: "echo s1 >> ledger"
        undo: [{kind: run, name: u1, command: "echo u1 >> ledger"}]
      - {kind: run, name: s2, command: "echo s2 >> ledger; false"}
"""


@pytest.mark.parametrize("answer", ["--skip-step", "--retry-step"])
def test_in_flight_rollback_action_pauses_and_is_never_guessed(tm: Tm, answer: str) -> None:
    """kill -9 right after a non-idempotent undo did its work and before its record: resume
    pauses naming the undo (it used to re-run it: `u1` twice). The operator answers; with
    --skip-step the undo ran once, with --retry-step twice (the operator's choice, recorded).

    Mutation tried: treat every rollback action as safe to re-run (``_rerun_safe`` True in
    ``rollback.run_rollback``): resume re-runs u1, the deploy does not pause, and this fails."""
    _write(tm.cwd / "p.yaml", ROLLBACK_PLAN)
    # effects: s1 (1), s2 failing (2), u1 (3): crash right after u1's effect
    proc = tm("run", "p.yaml", env={"TMINUS_CRASH_AFTER_EFFECTS": "3"})
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert (tm.cwd / "ledger").read_text().split() == ["s1", "s2", "u1"]
    again = tm("resume", "rb-1")
    assert again.returncode == 3, again.stdout + again.stderr
    info = tm.json("status", "rb-1")
    assert info["state"] == "paused" and "u1" in info["reason"] and "in flight" in info["reason"]
    assert (tm.cwd / "ledger").read_text().split() == ["s1", "s2", "u1"]
    done = tm("resume", "rb-1", answer)
    assert done.returncode == 1, done.stdout + done.stderr
    assert tm.json("status", "rb-1")["state"] == "rolled_back"
    want = ["s1", "s2", "u1"] + (["u1"] if answer == "--retry-step" else [])
    assert (tm.cwd / "ledger").read_text().split() == want


def test_abort_with_rollback_against_a_live_runner_rolls_back(tm: Tm) -> None:
    """`tminus abort --rollback` while the runner is in a long step: the runner stops the step,
    then runs the undo of what was done, and the deploy ends aborted (it used to ignore the
    --rollback of a live runner's abort).

    Mutation tried: ``_abort_wants_rollback`` always False: no undo runs, and this fails."""
    _write(
        tm.cwd / "p.yaml",
        """
name: abrb
environment: test
phases:
  - name: one
    steps:
      - kind: run
        command: "echo a >> ledger"
        undo: [{kind: run, command: "echo undo-a >> ledger"}]
      - {kind: run, command: "touch started; sleep 60; echo never >> ledger"}
""",
    )
    runner = _spawn(tm, "run", "p.yaml")
    try:
        _wait_for(tm.cwd / "started")
        assert tm("abort", "abrb-1", "--rollback").returncode == 0
        assert runner.wait(timeout=15) == 1
    finally:
        if runner.poll() is None:
            runner.kill()
    assert tm.json("status", "abrb-1")["state"] == "aborted"
    assert (tm.cwd / "ledger").read_text().split() == ["a", "undo-a"]
