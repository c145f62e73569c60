"""`tminus rollback`: undo a deploy after it succeeded (issue #12), all of it or chosen
phases (seed 000's "Phase 3: restore metadata"), within the plan's rollback window and unless
a later deploy succeeded since; `--force` records an override. Real CLI, real SQLite store."""

from __future__ import annotations

from typing import Any

from tests.conftest import Tm

PLAN = """
name: after
environment: test
rollback_window: 1h
variables: {tag: "a"}
phases:
  - name: schema
    steps:
      - kind: run
        command: "echo schema-${tag} >> ledger"
        undo: [{kind: run, command: "echo unschema-${tag} >> ledger"}]
  - name: "Phase 3: metadata"
    steps:
      - kind: run
        command: "echo meta-${tag} >> ledger"
        undo: [{kind: run, command: "echo unmeta-${tag} >> ledger"}]
    rollback:
      - {kind: run, command: "echo restore-metadata-${tag} >> ledger"}
  - name: release
    steps:
      - kind: run
        command: "echo release-${tag} >> ledger"
        undo: [{kind: run, command: "echo unrelease-${tag} >> ledger"}]
"""


def _ledger(tm: Tm) -> list[str]:
    path = tm.cwd / "ledger"
    return path.read_text().split() if path.exists() else []


def _phases(tm: Tm, deploy: str) -> list[str]:
    info: dict[str, Any] = tm.json("status", deploy)
    return [p["state"] for p in info["phases"]]


def test_rollback_after_success_undoes_everything_newest_first(tm: Tm) -> None:
    """It used to be refused ("has ended"): now the recorded undo and rollback steps run,
    newest phase first, and the deploy and its phases show rolled back."""
    (tm.cwd / "p.yaml").write_text(PLAN)
    assert tm("run", "p.yaml").returncode == 0
    proc = tm("rollback", "after-1", "--reason", "bad release")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _ledger(tm) == [
        "schema-a",
        "meta-a",
        "release-a",
        "unrelease-a",
        "restore-metadata-a",
        "unmeta-a",
        "unschema-a",
    ]
    info = tm.json("status", "after-1")
    assert info["state"] == "rolled_back" and "bad release" in info["reason"]
    assert _phases(tm, "after-1") == ["rolled_back"] * 3
    again = tm("rollback", "after-1")
    assert again.returncode == 2 and "no phase left to roll back" in again.stderr


def test_partial_rollback_of_one_phase_then_another(tm: Tm) -> None:
    """`--phase 2` runs only phase 2's rollback steps and undo (seed 000's "Phase 3: restore
    metadata"); the other phases stay succeeded and can be rolled back later; phase 2 cannot
    be rolled back twice."""
    (tm.cwd / "p.yaml").write_text(PLAN)
    assert tm("run", "p.yaml").returncode == 0
    proc = tm("rollback", "after-1", "--phase", "Phase 3:")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _ledger(tm)[3:] == ["restore-metadata-a", "unmeta-a"]
    assert _phases(tm, "after-1") == ["succeeded", "rolled_back", "succeeded"]
    twice = tm("rollback", "after-1", "--phase", "2")
    assert twice.returncode == 2 and "nothing to roll back in phase(s) 2" in twice.stderr
    assert tm("rollback", "after-1", "--phase", "1").returncode == 0
    assert _ledger(tm)[5:] == ["unschema-a"]
    assert _phases(tm, "after-1") == ["rolled_back", "rolled_back", "succeeded"]
    types = [e["type"] for e in tm.json("log", "after-1")]
    assert types.count("rollback.requested") == 2


def test_refused_after_the_window_or_a_later_success_unless_forced(tm: Tm) -> None:
    """Past `rollback_window` (1h here; the clock is moved 2h on) the rollback is refused,
    and so is the rollback of a deploy that a later one of the same plan replaced; `--force`
    goes ahead and records why.

    Mutations tried: the window check off, and the later-deploy check off (each in
    ``runner.rollback``): the refused rollbacks run, and this fails."""
    (tm.cwd / "p.yaml").write_text(PLAN)
    assert tm("run", "p.yaml").returncode == 0
    late = tm("rollback", "after-1", env={"TMINUS_CLOCK_OFFSET": "7200"})
    assert late.returncode == 2 and "rollback window (1h) closed" in late.stderr
    assert tm("run", "p.yaml", "--var", "tag=b").returncode == 0
    replaced = tm("rollback", "after-1")
    assert replaced.returncode == 2 and "after-2" in replaced.stderr
    assert _ledger(tm) == ["schema-a", "meta-a", "release-a", "schema-b", "meta-b", "release-b"]
    assert tm("rollback", "after-2").returncode == 0
    forced = tm("rollback", "after-1", "--force", env={"TMINUS_CLOCK_OFFSET": "7200"})
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "override recorded" in forced.stderr and "rollback window" in forced.stderr
    events = tm.json("log", "after-1")
    requested = next(e for e in events if e["type"] == "rollback.requested")
    assert requested["data"]["forced"], requested


def test_a_scheduled_deploy_is_rolled_back_and_its_delayed_phase_never_runs(tm: Tm) -> None:
    text = PLAN.replace("  - name: release\n", "  - name: release\n    after: 30d\n")
    (tm.cwd / "p.yaml").write_text(text)
    assert tm("run", "p.yaml").returncode == 3
    assert tm.json("status", "after-1")["state"] == "scheduled"
    assert tm("rollback", "after-1").returncode == 0
    assert _ledger(tm)[2:] == ["restore-metadata-a", "unmeta-a", "unschema-a"]
    assert tm.json("status", "after-1")["state"] == "rolled_back"
    assert [d["id"] for d in tm.json("due")] == []


def test_a_failed_deploy_is_not_for_tminus_rollback(tm: Tm) -> None:
    """A deploy whose own rollback failed ended *failed*: `tminus rollback` does not retry it
    behind the operator's back."""
    text = PLAN.replace("echo release-${tag} >> ledger", "false").replace(
        "echo unschema-${tag} >> ledger", "false"
    )
    (tm.cwd / "p.yaml").write_text(text)
    assert tm("run", "p.yaml").returncode == 1
    assert tm.json("status", "after-1")["state"] == "failed"
    proc = tm("rollback", "after-1")
    assert proc.returncode == 2 and "already run its rollback" in proc.stderr


def _window_plan(tm: Tm, start: str, duration: str = "1h") -> None:
    (tm.cwd / "w.yaml").write_text(f"""
name: windowed
environment: test
window: {{start: "{start}", timezone: UTC, duration: {duration}}}
phases:
  - name: one
    steps: [{{kind: run, command: "echo ran >> ledger"}}]
""")


def test_run_outside_the_window_is_refused_unless_a_reason_is_given(tm: Tm) -> None:
    """`window.start` used to be ignored (a deploy ran a week early without a word). Before
    the window opens, and after it closed, `tminus run` is bad input (exit 2) and runs
    nothing; `--outside-window REASON` runs it and records the reason.

    Mutation tried: ``window_problem`` not called in ``start_loaded``: the early run goes
    ahead, and this fails."""
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _window_plan(tm, soon)
    early = tm("run", "w.yaml")
    assert early.returncode == 2 and "window opens at" in early.stderr, early.stderr
    assert "--outside-window" in early.stderr and not (tm.cwd / "ledger").exists()
    assert tm.json("list") == []
    forced = tm("run", "w.yaml", "--outside-window", "hotfix for INC-42")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    events = tm.json("log", "windowed-1")
    ev = next(e for e in events if e["type"] == "deploy.outside_window")
    assert "hotfix for INC-42" in ev["message"]
    past = (datetime.now(UTC) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _window_plan(tm, past)
    late = tm("run", "w.yaml")
    assert late.returncode == 2 and "closed at" in late.stderr
    now = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    _window_plan(tm, now)
    assert tm("run", "w.yaml").returncode == 0


def _overrun_plan(tm: Tm, on_overrun: str | None) -> None:
    """The window ends 30 min 8 s from now. Phase 1 is estimated at 1 s but takes 9 s, so
    when phase 2 (estimated at 30 min) is about to start, it no longer fits."""
    from datetime import UTC, datetime, timedelta

    end = datetime.now(UTC) + timedelta(minutes=30, seconds=8)
    start = (end - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    extra = f", on_overrun: {on_overrun}" if on_overrun else ""
    (tm.cwd / "o.yaml").write_text(f"""
name: over
environment: test
window: {{start: "{start}", timezone: UTC, duration: 1h{extra}}}
phases:
  - name: quick
    estimate: 1s
    steps:
      - kind: run
        command: "echo quick >> ledger; sleep 9"
        undo: [{{kind: run, command: "echo unquick >> ledger"}}]
  - name: long migration
    estimate: 30m
    steps: [{{kind: run, command: "echo long >> ledger"}}]
""")


def test_window_overrun_pauses_once_by_default(tm: Tm) -> None:
    """Phase 1 overran its estimate: the next phase no longer fits in the window, and the
    deploy pauses before starting it (the window's end used to be ignored); resuming goes on.

    Mutation tried: ``_overrun`` returns None: the deploy runs through, and this fails."""
    _overrun_plan(tm, None)
    proc = tm("run", "o.yaml")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    info = tm.json("status", "over-1")
    assert info["state"] == "paused" and "window overrun" in info["reason"]
    assert _ledger(tm) == ["quick"]
    assert tm("resume", "over-1").returncode == 0
    assert _ledger(tm) == ["quick", "long"]


def test_window_overrun_rolls_back_or_continues_as_the_plan_says(tm: Tm) -> None:
    _overrun_plan(tm, "rollback")
    assert tm("run", "o.yaml").returncode == 1
    info = tm.json("status", "over-1")
    assert info["state"] == "rolled_back" and "window overrun" in info["reason"]
    assert _ledger(tm) == ["quick", "unquick"]
    (tm.cwd / "ledger").unlink()
    _overrun_plan(tm, "continue")
    assert tm("run", "o.yaml").returncode == 0
    assert _ledger(tm) == ["quick", "long"]
    assert "window.overrun" in [e["type"] for e in tm.json("log", "over-2")]
