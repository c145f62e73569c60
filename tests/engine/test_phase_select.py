"""`tminus run --phase`: a deploy of selected phases, through the real CLI on a real store —
what runs, what the gates still ask, what rollback covers, what resume and status see."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from tests.conftest import Tm

PLAN = """
name: picky
environment: test
variables:
  fail_in: none
checklist:
  - item: Release notes reviewed
phases:
  - name: Prepare
    steps:
      - kind: run
        name: one
        command: echo one >> effects.log
        undo:
          - {kind: run, name: undo one, command: echo undo-one >> effects.log}
  - name: Migrate
    steps:
      - kind: run
        name: two
        command: echo two >> effects.log
        undo:
          - {kind: run, name: undo two, command: echo undo-two >> effects.log}
    rollback:
      - {kind: run, name: rollback two, command: echo rollback-two >> effects.log}
  - name: Release
    steps:
      - kind: run
        name: three
        command: echo three >> effects.log
        undo:
          - {kind: run, name: undo three, command: echo undo-three >> effects.log}
      - kind: run
        name: maybe fail
        command: test ${fail_in} != release
success_metrics:
  - name: summary ran
    check: {source: command, command: "echo summary >> effects.log; echo 1", expect: "== 1"}
"""


def write_plan(tm: Tm, text: str = PLAN) -> str:
    path = tm.cwd / "plan.yaml"
    path.write_text(text)
    return str(path)


def effects(tm: Tm) -> list[str]:
    path = tm.cwd / "effects.log"
    return path.read_text().split() if path.exists() else []


def status(tm: Tm, deploy: str) -> dict[str, Any]:
    return dict(tm.json("status", deploy))


def test_selected_phases_run_in_plan_order_and_status_shows_the_selection(tm: Tm) -> None:
    plan = write_plan(tm)
    proc = tm(
        "run", plan, "--phase", "Release", "--phase", "1", "--confirm", "Release notes reviewed"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert effects(tm) == ["one", "three"]  # plan order, not command-line order; no summary
    info = status(tm, "picky-1")
    assert info["state"] == "succeeded"
    assert [p["state"] for p in info["phases"]] == ["succeeded", "not selected", "succeeded"]
    assert info["selection"] == {
        "phases": [1, 3],
        "names": ["Prepare", "Release"],
        "skip_checklist": False,
    }
    assert not any(s["key"].startswith("phase/1/") for s in info["steps"])
    sel = [e for e in tm.json("log", "picky-1") if e["type"] == "deploy.selection"]
    assert len(sel) == 1 and sel[0]["data"] == info["selection"]
    assert "1 (Prepare), 3 (Release)" in sel[0]["message"]
    # a full run of the same plan still has no selection
    assert tm("run", plan, "--confirm", "Release notes reviewed").returncode == 0
    assert status(tm, "picky-2")["selection"] is None
    assert effects(tm)[2:] == ["one", "two", "three", "summary"]


def test_unknown_phase_is_bad_input_with_a_hint_and_starts_nothing(tm: Tm) -> None:
    plan = write_plan(tm)
    proc = tm("run", plan, "--phase", "Migrte")
    assert proc.returncode == 2
    assert "no phase 'Migrte'" in proc.stderr and "did you mean 'Migrate'?" in proc.stderr
    far = tm("run", plan, "--phase", "7")
    assert far.returncode == 2 and "1: Prepare; 2: Migrate; 3: Release" in far.stderr
    assert tm("run", plan, "--phase", "migrate", "--dry-run").returncode == 0  # any case
    assert "phase 2: Migrate" in tm("run", plan, "--phase", "mig", "--dry-run", check=0).stdout
    two = write_plan(tm, PLAN.replace("name: Prepare", "name: Release notes"))
    fits = tm("run", two, "--phase", "rel")  # the start of two names
    assert fits.returncode == 2 and "fits 2 phases: 1: Release notes; 3: Release" in fits.stderr
    exact = tm("run", two, "--phase", "release", "--dry-run", check=0).stdout  # a whole name
    assert "selected: phases 3 (Release)" in exact
    assert tm.json("list") == []
    assert effects(tm) == []


def test_rollback_covers_only_the_selected_phases(tm: Tm) -> None:
    plan = write_plan(tm)
    proc = tm(
        "run", plan, "--phase", "1", "--phase", "3", "--var", "fail_in=release",
        "--confirm", "Release notes reviewed",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # phase 2 never ran, so neither its undo nor its `rollback:` steps run
    assert effects(tm) == ["one", "three", "undo-three", "undo-one"]
    info = status(tm, "picky-1")
    assert info["state"] == "rolled_back"
    # phase 1 succeeded, then its undo ran: it shows as rolled back (issue #12: truthful status)
    assert [p["state"] for p in info["phases"]] == ["rolled_back", "not selected", "rolled_back"]


def test_the_checklist_still_gates_a_selected_run_and_resume_keeps_the_selection(
    tm: Tm,
) -> None:
    plan = write_plan(tm)
    assert tm("run", plan, "--phase", "Migrate").returncode == 3
    assert tm.latest()["state"] == "awaiting_confirmation"
    assert effects(tm) == []
    proc = tm("resume", "picky-1", "--confirm", "Release notes reviewed")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert effects(tm) == ["two"]  # the resumed deploy runs the selected phase only
    assert status(tm, "picky-1")["selection"]["phases"] == [2]


def test_skip_checklist_only_with_phases_and_recorded(tm: Tm) -> None:
    failing = PLAN.replace(
        "  - item: Release notes reviewed\n",
        "  - item: Release notes reviewed\n"
        "  - item: CI is green\n"
        "    check: {source: command, command: 'echo 0', expect: '== 1'}\n",
    )
    plan = write_plan(tm, failing)
    full = tm("run", plan, "--skip-checklist")
    assert full.returncode == 2 and "--skip-checklist applies to a run of selected" in full.stderr
    proc = tm("run", plan, "--phase", "Migrate", "--skip-checklist")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert effects(tm) == ["two"]
    info = status(tm, "picky-1")
    assert info["selection"]["skip_checklist"] is True
    assert not any(s["key"].startswith("checklist/") for s in info["steps"])
    sel = [e for e in tm.json("log", "picky-1") if e["type"] == "deploy.selection"]
    assert "checklist skipped" in sel[0]["message"] and "alice" in sel[0]["message"]
    # without the flag, the failing automated item still fails a selected run
    assert (
        tm("run", plan, "--phase", "Migrate", "--confirm", "Release notes reviewed").returncode == 1
    )
    assert tm.latest()["state"] == "failed" and effects(tm) == ["two"]


APPROVED = """
name: approved
environment: test
roles:
  lead: {people: [bob]}
approvals: {required: [lead]}
phases:
  - name: a
    steps: [{kind: run, name: a, command: "echo a >> effects.log"}]
  - name: b
    steps: [{kind: run, name: b, command: "echo b >> effects.log"}]
  - name: c
    steps: [{kind: run, name: c, command: "echo c >> effects.log"}]
"""


def test_approvals_gate_a_selected_run_and_the_selection_survives_in_the_store(tm: Tm) -> None:
    plan = write_plan(tm, APPROVED)
    assert tm("run", plan, "--phase", "b", "--var", "x=1").returncode == 2  # undeclared: no deploy
    assert tm("run", plan, "--phase", "b").returncode == 3
    assert tm.latest()["state"] == "awaiting_approval"
    # the selection is stored with the deploy row itself (no separate write to lose)
    with sqlite3.connect(tm.cwd / ".tminus" / "state.db") as db:
        (raw,) = db.execute("SELECT overrides FROM deploys WHERE id = 'approved-1'").fetchone()
    assert '"@selection"' in raw and '"phases": [1]' in raw
    tm("approve", "approved-1", "--role", "lead", "--as", "bob", check=0)
    assert tm("resume", "approved-1").returncode == 0
    assert effects(tm) == ["b"]
    assert [p["state"] for p in status(tm, "approved-1")["phases"]] == [
        "not selected",
        "succeeded",
        "not selected",
    ]


def test_dry_run_lists_only_the_selection(tm: Tm) -> None:
    plan = write_plan(tm)
    out = tm("run", plan, "--phase", "3", "--dry-run", check=0).stdout
    assert "selected: phases 3 (Release)" in out
    assert "phase 3: Release" in out and "phase 1:" not in out and "phase 2:" not in out
    assert "checklist (confirm): Release notes reviewed" in out
    skipped = tm("run", plan, "--phase", "3", "--skip-checklist", "--dry-run", check=0).stdout
    assert "checklist" not in skipped.replace("checklist skipped", "")


@pytest.mark.parametrize("crash_after", [1, 7])
def test_a_crashed_selected_deploy_resumes_with_its_selection(tm: Tm, crash_after: int) -> None:
    """The runner dies (1: right after the deploy row was written, before anything else; 7: in
    the middle of the phase); resume must still skip the unselected phases: the selection is
    read back from the deploy row, not from the command line."""
    plan = write_plan(tm)
    proc = tm(
        "run", plan, "--phase", "2", "--skip-checklist",
        env={"TMINUS_CRASH_AFTER_COMMITS": str(crash_after)},
    )  # fmt: skip
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert tm.latest()["state"] == "crashed"  # a dead runner is never shown as running
    assert effects(tm) in ([], ["two"])
    assert tm("resume", "picky-1").returncode == 0
    assert effects(tm) == ["two"]  # `run` steps are not idempotent: "two" ran at most once
    assert status(tm, "picky-1")["selection"]["phases"] == [2]
