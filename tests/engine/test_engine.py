"""The durable engine end to end, through the real CLI in subprocesses, on real stores."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import Tm

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart" / "plan.yaml"


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def status(tm: Tm, deploy: str) -> dict[str, Any]:
    return dict(tm.json("status", deploy))


def test_quickstart_runs_then_schedules_cleanup(tm: Tm) -> None:
    proc = tm("run", str(QUICKSTART), "--confirm", "Release notes reviewed")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    info = status(tm, "quickstart-1")
    assert info["state"] == "scheduled"
    assert [p["state"] for p in info["phases"]] == ["succeeded"] * 3 + ["pending"]
    assert info["maintenance"]["total_s"] > 0 and not info["maintenance"]["on_now"]
    data = tm.cwd / ".tminus" / "quickstart"
    assert (data / "VERSION").read_text().strip() == "1.0.0"
    assert not (data / "maintenance.flag").exists()
    cols = [r[1] for r in sqlite3.connect(data / "app.db").execute("pragma table_info(users)")]
    assert cols == ["id", "name", "email"]
    due = tm.json("due")
    assert due[0]["id"] == "quickstart-1" and due[0]["is_due"] is False
    again = tm("resume", "quickstart-1")
    assert again.returncode == 3 and "scheduled" in again.stderr


def test_quickstart_failure_rolls_back(tm: Tm) -> None:
    proc = tm("run", str(QUICKSTART), "--confirm", "Release notes reviewed", "--var", "fail=yes")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    info = status(tm, "quickstart-1")
    assert info["state"] == "rolled_back"
    data = tm.cwd / ".tminus" / "quickstart"
    cols = [r[1] for r in sqlite3.connect(data / "app.db").execute("pragma table_info(users)")]
    assert cols == ["id", "name"], "the undo of 'Add the email column' must have run"
    assert not (data / "maintenance.flag").exists(), "maintenance must be off after rollback"
    assert not (data / "VERSION").exists()
    types = [e["type"] for e in tm.json("log", "quickstart-1")]
    assert types.index("deploy.rolling_back") < types.index("maintenance.off")
    # the deploy's own last events (the notifications' deliveries may be recorded after them)
    own = [x for x in types if not x.startswith("notify.")]
    assert own[-2:] == ["deploy.rolled_back", "lock.released"]
    assert "notify.sent" in types  # the quickstart's rules were delivered (its log channel)


def test_manual_checklist_waits_for_confirmation(tm: Tm) -> None:
    proc = tm("run", str(QUICKSTART))
    assert proc.returncode == 3
    d = tm.latest()
    assert d["state"] == "awaiting_confirmation" and "Release notes reviewed" in d["reason"]
    bad = tm("resume", d["id"], "--confirm", "Release note reviewd")
    assert bad.returncode == 2 and "did you mean" in bad.stderr
    ok = tm("resume", d["id"], "--confirm", "Release notes reviewed")
    assert ok.returncode == 3  # ran to the delayed cleanup phase
    log = tm.json("log", d["id"])
    confirmed = [e for e in log if e["type"] == "checklist.confirmed"]
    assert confirmed and confirmed[0]["data"]["person"] == "alice"


APPROVAL_PLAN = """
name: gated
environment: test
roles:
  lead: {people: [alice, bob]}
approvals: {required: [lead], separation_of_duties: true}
phases:
  - name: only
    steps:
      - {kind: run, name: touch, command: "touch done.txt"}
      - kind: approve
        name: go/no-go
        roles: [lead]
      - {kind: run, name: after, command: "touch after.txt"}
"""


def test_approvals_and_separation_of_duties(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", APPROVAL_PLAN)
    assert tm("run", str(plan)).returncode == 3
    assert tm.latest()["state"] == "awaiting_approval"
    assert not (tm.cwd / "done.txt").exists()
    own = tm("approve", "gated-1", "--role", "lead", "--as", "alice")
    assert own.returncode == 2 and "separation of duties" in own.stderr
    stranger = tm("approve", "gated-1", "--role", "lead", "--as", "mallory")
    assert stranger.returncode == 2 and "not in role" in stranger.stderr
    tm("approve", "gated-1", "--role", "lead", "--as", "bob", "--comment", "lgtm", check=0)
    assert tm("resume", "gated-1").returncode == 3  # the mid-plan approve step waits
    assert (tm.cwd / "done.txt").exists() and not (tm.cwd / "after.txt").exists()
    tm("approve", "gated-1", "--role", "lead", "--as", "bob", check=0)
    assert tm("resume", "gated-1").returncode == 0
    assert (tm.cwd / "after.txt").exists()
    approvals = [e for e in tm.json("log", "gated-1") if e["type"] == "approval.given"]
    assert [a["key"] for a in approvals] == ["approvals", "phase/0/step/1"]


PAUSE_PLAN = """
name: guided
environment: test
phases:
  - name: one
    on_failure: pause
    steps:
      - {kind: run, name: first, command: "echo first >> effects.log"}
      - {kind: run, name: flaky, command: "test -f ready && echo flaky >> effects.log"}
      - {kind: run, name: last, command: "echo last >> effects.log"}
"""


def test_guided_failure_retry_and_skip(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", PAUSE_PLAN)
    assert tm("run", str(plan)).returncode == 3
    d = tm.latest()
    assert d["state"] == "paused" and "flaky failed" in d["reason"]
    assert tm("resume", d["id"], "--retry-step").returncode == 3  # still failing
    (tm.cwd / "ready").touch()
    assert tm("resume", d["id"], "--retry-step").returncode == 0
    assert (tm.cwd / "effects.log").read_text().split() == ["first", "flaky", "last"]
    # skip
    (tm.cwd / "ready").unlink()
    assert tm("run", str(plan)).returncode == 3
    assert tm("resume", "guided-2", "--skip-step").returncode == 0
    steps = {s["key"]: s["state"] for s in status(tm, "guided-2")["steps"]}
    assert steps["phase/0/step/1"] == "skipped"


def test_abort_is_recorded_as_aborted(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", PAUSE_PLAN)
    assert tm("run", str(plan)).returncode == 3
    assert tm("abort", "guided-1", "--rollback").returncode == 0
    info = status(tm, "guided-1")
    assert info["state"] == "aborted" and "aborted by alice" in info["reason"]
    # the lock is released: a new deploy can start
    assert tm("run", str(plan)).returncode == 3


LOCK_PLAN = """
name: slow
environment: test
phases:
  - name: one
    steps:
      - kind: run
        name: nap
        command: "for i in $(seq 300); do [ -f stop ] && exit 0; sleep 0.1; done"
        idempotent: true
"""


def test_lock_contention_and_force_unlock(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", LOCK_PLAN)
    first = subprocess.Popen(
        [sys.executable, "-m", "tminus", "run", str(plan), "--reason", "nightly release"],
        cwd=tm.cwd,
        env=tm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            rows = tm.json("list")
            if rows and rows[0]["state"] == "running":
                break
            time.sleep(0.2)
        start = time.monotonic()
        second = tm("run", str(plan), env={"TMINUS_OPERATOR": "bob"})
        assert second.returncode == 4
        assert time.monotonic() - start < 10, "a held lock must fail at once"
        for part in ("slow-1", "alice", "nightly release", "since"):
            assert part in second.stderr, second.stderr
        first.kill()  # the runner dies (SIGKILL): its lock is now stale
        first.wait()
        assert tm("run", str(plan), env={"TMINUS_OPERATOR": "bob"}).returncode == 4
        (tm.cwd / "stop").touch()
        taken = tm("run", str(plan), "--force-unlock", env={"TMINUS_OPERATOR": "bob"})
        assert taken.returncode == 0, taken.stderr
        new_id = tm.latest()["id"]
        log = tm.json("log", new_id)
        over = [e for e in log if e["type"] == "lock.taken_over"]
        assert over and "slow-1" in over[0]["message"] and "alice" in over[0]["message"]
    finally:
        if first.poll() is None:
            first.kill()


SECRET_PLAN = """
name: secretive
environment: test
secrets:
  token: ${env:TM_TEST_TOKEN}
variables:
  url: https://user:${token}@example.invalid/
phases:
  - name: one
    steps:
      - kind: run
        name: use the token
        command: echo "token is ${token}; url ${url}" && echo "${token}" >&2
        env: {API_TOKEN: "${token}"}
      - kind: run
        name: env
        command: echo "from env $API_TOKEN"
        env: {API_TOKEN: "${token}"}
      - kind: notify
        message: "deployed with ${token}"
"""


def test_secrets_never_reach_output_log_or_store(tm: Tm) -> None:
    secret = "s3cr3t-Value-9917"
    plan = write(tm.cwd / "p.yaml", SECRET_PLAN)
    env = {"TM_TEST_TOKEN": secret}
    dry = tm("run", str(plan), "--dry-run", env=env)
    run = tm("run", str(plan), env=env)
    assert run.returncode == 0, run.stderr
    log = tm("log", "secretive-1", "--output", "json")
    st = tm("status", "secretive-1", "--output", "json")
    for proc in (dry, run, log, st):
        assert secret not in proc.stdout + proc.stderr
    assert "***" in run.stdout
    db = (tm.cwd / ".tminus" / "state.db").read_bytes()
    for f in (tm.cwd / ".tminus").iterdir():
        assert secret.encode() not in f.read_bytes(), f
    assert secret.encode() not in db
    missing = tm("run", str(plan))
    assert missing.returncode == 2 and "TM_TEST_TOKEN is not set" in missing.stderr


def test_postgres_store(tm: Tm, pg_url: str) -> None:
    plan = write(tm.cwd / "p.yaml", PAUSE_PLAN.replace("test -f ready && ", ""))
    proc = tm("run", str(plan), "--state", pg_url)
    assert proc.returncode == 0, proc.stderr
    rows = tm.json("list", "--state", pg_url)
    assert rows[0]["state"] == "succeeded"
    assert not (tm.cwd / ".tminus" / "state.db").exists()
    log = tm.json("log", "guided-1", "--state", pg_url)
    assert [e["type"] for e in log][-1] == "lock.released"


DELAYED_PLAN = """
name: later
environment: test
phases:
  - name: now
    steps: [{kind: run, name: a, command: "echo a >> effects.log"}]
  - name: cleanup
    after: 30d
    steps: [{kind: run, name: b, command: "echo b >> effects.log"}]
"""


def test_delayed_phase_is_scheduled_then_resumed(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", DELAYED_PLAN)
    assert tm("run", str(plan)).returncode == 3
    d = tm.latest()
    assert d["state"] == "scheduled" and d["due_at"]
    assert tm("resume", d["id"]).returncode == 3
    assert tm.json("due")[0]["is_due"] is False
    # the lock is free while scheduled: another deploy of the plan may run meanwhile
    assert tm.json("list")[0]["id"] == "later-1"
    later = {"TMINUS_CLOCK_OFFSET": str(30 * 86400 + 5)}
    due = tm("due", "--output", "json", env=later)
    assert '"is_due": true' in due.stdout
    assert tm("resume", d["id"], env=later).returncode == 0
    assert (tm.cwd / "effects.log").read_text().split() == ["a", "b"]


def test_dry_run_executes_nothing(tm: Tm) -> None:
    proc = tm("run", str(QUICKSTART), "--dry-run")
    assert proc.returncode == 0
    assert "ALTER TABLE users ADD COLUMN email TEXT" in proc.stdout
    assert "undo: Drop the email column" in proc.stdout
    assert not (tm.cwd / ".tminus").exists()


def test_bad_plan_is_exit_2_without_traceback(tm: Tm) -> None:
    plan = write(
        tm.cwd / "p.yaml", "name: x\nphases:\n  - name: a\n    steps:\n      - kind: rnu\n"
    )
    proc = tm("run", str(plan))
    assert proc.returncode == 2
    assert "p.yaml:5:" in proc.stderr and "did you mean 'run'" in proc.stderr
    assert "Traceback" not in proc.stderr


ABORT_PLAN = """
name: long
environment: test
maintenance: {flag_file: maint.flag}
phases:
  - name: one
    downtime: true
    steps:
      - {kind: maintenance, action: "on"}
      - {kind: run, name: a, command: "echo a >> effects.log"}
      - kind: run
        name: b
        command: "for i in $(seq 600); do [ -f go ] && break; sleep 0.1; done; echo b >>effects.log"
      - {kind: run, name: c, command: "echo c >> effects.log"}
      - {kind: run, name: d, command: "echo d >> effects.log"}
"""


def test_abort_stops_a_live_runner_in_its_current_step(tm: Tm) -> None:
    """An abort stops the step that is running (b, waiting for a file that never comes):
    its process group is killed, c and d never run, maintenance goes off, state aborted."""
    plan = write(tm.cwd / "p.yaml", ABORT_PLAN)
    runner = subprocess.Popen(
        [sys.executable, "-m", "tminus", "run", str(plan)],
        cwd=tm.cwd,
        env=tm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 30
        while not (tm.cwd / "effects.log").exists() and time.time() < deadline:
            time.sleep(0.1)
        proc = tm("abort", "long-1", env={"TMINUS_OPERATOR": "carol"})
        assert proc.returncode == 0 and "abort requested" in proc.stdout
        assert runner.wait(timeout=30) == 1
        (tm.cwd / "go").touch()  # had b survived the abort, it would now write "b"
        time.sleep(0.5)
    finally:
        if runner.poll() is None:
            runner.kill()
    info = status(tm, "long-1")
    assert info["state"] == "aborted" and "carol" in info["reason"]
    assert _lines(tm.cwd / "effects.log") == ["a"]
    assert not (tm.cwd / "maint.flag").exists(), "maintenance goes off on abort"
    assert tm.json("list")[0]["state"] == "aborted"


def test_a_shown_run_describes_each_step_and_a_quiet_one_does_not(tm: Tm) -> None:
    """The console line of a step carries its description (the runbook's words, values as
    they run): the command as written, not only its output. A ``--quiet`` run shows nothing
    (the engine then does not even make the description). Mutation: the engine's
    ``reporter.quiet`` test inverted: the shown run lacks the description and this fails."""
    plan = write(
        tm.cwd / "p.yaml",
        """
name: described
environment: test
phases:
  - name: one
    steps:
      - {kind: run, name: marker, command: "echo marker-$((1+1))"}
""",
    )
    shown = tm("run", str(plan))
    assert shown.returncode == 0, shown.stderr
    step_lines = [ln for ln in shown.stdout.splitlines() if ln.startswith("-> marker")]
    assert len(step_lines) == 1 and "marker-$((1+1))" in step_lines[0], shown.stdout
    quiet = tm("run", str(plan), "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "marker-$((1+1))" not in quiet.stdout
