"""Issue #12, the smaller CLI items, end to end through the real CLI in subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Tm

CHECKLIST_PLAN = """
name: gate
environment: test
variables:
  later: "0"
checklist:
  - {item: Release notes reviewed, id: notes}
  - item: Disk has room
    check: {source: command, command: "echo 5", expect: "< 90"}
  - item: On-call is told
  - item: Backups are fresh
    check: {source: command, command: "echo ${later}", expect: "== 0"}
phases:
  - name: only
    steps: [{kind: run, name: touch, command: "touch done.txt"}]
"""


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_checklist_lists_every_unconfirmed_manual_item(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", CHECKLIST_PLAN)
    proc = tm("run", plan)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    # Both manual items at once, each with its own command; the automated items ran first.
    assert 'tminus resume gate-1 --confirm "Release notes reviewed"' in out
    assert 'tminus resume gate-1 --confirm "On-call is told"' in out
    assert "Backups are fresh" in proc.stdout and "Disk has room" in proc.stdout
    d = tm.latest()
    assert d["state"] == "awaiting_confirmation"
    assert "Release notes reviewed" in d["reason"] and "On-call is told" in d["reason"]
    # One confirmed: only the other one is left.
    again = tm("resume", "gate-1", "--confirm", "notes")
    assert again.returncode == 3
    assert 'tminus resume gate-1 --confirm "On-call is told"' in again.stderr
    assert "Release notes reviewed" not in tm.latest()["reason"]
    assert tm("resume", "gate-1", "--confirm", "On-call is told").returncode == 0
    assert (tm.cwd / "done.txt").exists()


def test_checklist_failing_automated_item_after_a_manual_one_fails(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", CHECKLIST_PLAN)
    proc = tm("run", plan, "--var", "later=1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    d = tm.latest()
    assert d["state"] == "failed" and "Backups are fresh" in d["reason"]
    assert not (tm.cwd / "done.txt").exists()


SIMPLE_PLAN = """
name: simple
environment: test
variables:
  fail: "no"
checks:
  disk_ok: {source: command, command: "echo 42", expect: "< 90", warn: "> 40"}
  answer: {source: command, command: "echo ${answer}", expect: "== 42"}
checklist:
  - item: Disk is fine
    check: disk_ok
phases:
  - name: first
    steps:
      - {kind: run, name: say, command: "echo progress-line"}
  - name: second
    steps:
      - {kind: run, name: maybe fail, command: "test ${fail} = no"}
"""


def test_run_output_json_is_one_object_on_stdout(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", SIMPLE_PLAN.replace("${answer}", "42"))
    proc = tm("run", plan, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # nothing but the object on stdout
    assert out["deploy_id"] == "simple-1" and out["state"] == "succeeded"
    assert out["exit_code"] == 0
    assert [p["state"] for p in out["phases"]] == ["succeeded", "succeeded"]
    assert {s["key"] for s in out["steps"]} >= {"phase/0/step/0", "phase/1/step/0"}
    assert "phase 1/2" in proc.stderr  # progress went to stderr
    failed = tm("run", plan, "--output", "json", "--var", "fail=yes")
    assert failed.returncode == 1
    data = json.loads(failed.stdout)
    assert data["exit_code"] == 1 and data["state"] == "rolled_back" and data["reason"]
    bad = tm("run", plan, "--output", "json", "--var", "nope=1")
    assert bad.returncode == 2 and json.loads(bad.stdout)["exit_code"] == 2


def test_resume_output_json(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", CHECKLIST_PLAN)
    assert tm("run", plan).returncode == 3
    proc = tm("resume", "gate-1", "--confirm", "notes", "--output", "json")
    assert proc.returncode == 3
    out = json.loads(proc.stdout)
    assert out["state"] == "awaiting_confirmation" and "On-call is told" in out["reason"]


DELAYED_PLAN = """
name: later
environment: test
phases:
  - name: now
    steps: [{kind: run, name: a, command: "true"}]
  - name: cleanup
    after: 30d
    steps: [{kind: run, name: b, command: "true"}]
"""


def test_due_exit_code_for_cron(tm: Tm) -> None:
    assert tm("due").returncode == 0  # nothing scheduled
    plan = write(tm.cwd / "p.yaml", DELAYED_PLAN)
    assert tm("run", plan).returncode == 3
    assert tm("due").returncode == 0  # scheduled, not yet due
    later = {"TMINUS_CLOCK_OFFSET": str(30 * 86400 + 5)}
    proc = tm("due", "--output", "json", env=later)
    assert proc.returncode == 3 and json.loads(proc.stdout)[0]["is_due"] is True
    assert tm("due", env=later).returncode == 3
    assert tm("due", "--output", "yaml").returncode == 2


def test_backups_list_finds_a_custom_dest_once(tm: Tm) -> None:
    url = f"sqlite:///{tm.cwd / 'app.db'}"
    (tm.cwd / "app.db").touch()
    write(
        tm.cwd / "p.yaml",
        f"""
name: bk
environment: test
targets:
  databases:
    app: {{kind: sqlite, url: "{url}"}}
phases:
  - name: one
    steps:
      - {{kind: sql, database: app, statements: "CREATE TABLE IF NOT EXISTS t (id INTEGER)"}}
      - {{kind: backup, database: app, dest: "{tm.cwd / "elsewhere"}"}}
      - {{kind: backup, database: app}}
""",
    )
    assert tm("run", "p.yaml").returncode == 0
    assert tm("run", "p.yaml").returncode == 0
    rows = tm.json("backups", "list")
    dirs = sorted(Path(r["dir"]).resolve().parent.name for r in rows)
    assert dirs == ["backups", "backups", "elsewhere", "elsewhere"]
    assert len({r["dir"] for r in rows}) == 4
    custom = next(r["id"] for r in rows if "elsewhere" in r["dir"])
    assert tm("backups", "verify", custom).returncode == 0


OP_PLAN = """
name: shop
environment: test
roles:
  oncall: {people: [bob]}
phases:
  - name: deploy
    steps: [{kind: run, name: noop, command: "true"}]
operations:
  restart:
    roles: [oncall]
    steps: [{kind: run, name: restart, command: "touch restarted"}]
"""


def test_op_dry_run_needs_no_role(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", OP_PLAN)
    proc = tm("op", "run", plan, "restart", "--dry-run")  # alice is not on call
    assert proc.returncode == 0, proc.stderr
    assert "oncall (bob); alice may not" in proc.stdout
    assert not (tm.cwd / "restarted").exists() and not (tm.cwd / ".tminus").exists()
    real = tm("op", "run", plan, "restart")
    assert real.returncode == 2 and "may not run" in real.stderr


def test_check_run_check(tm: Tm) -> None:
    plan = write(tm.cwd / "p.yaml", SIMPLE_PLAN.replace("${answer}", "${fail}"))
    warn = tm("check", plan, "--run-check", "disk_ok")
    assert warn.returncode == 0, warn.stderr
    assert "WARN" in warn.stdout and "42" in warn.stdout
    crit = tm("check", plan, "--run-check", "answer", "--run-check", "checklist")
    assert crit.returncode == 1
    assert "CRITICAL" in crit.stdout and "Disk is fine" in crit.stdout
    ok = tm("check", plan, "--run-check", "answer", "--var", "fail=42", "--output", "json")
    assert ok.returncode == 0
    assert [c["status"] for c in json.loads(ok.stdout)["checks"]] == ["PASS"]
    typo = tm("check", plan, "--run-check", "dsk_ok")
    assert typo.returncode == 2 and "did you mean 'disk_ok'" in typo.stderr
    assert not (tm.cwd / ".tminus").exists()
