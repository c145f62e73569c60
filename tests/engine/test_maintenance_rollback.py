"""Maintenance and rollback do what the plan says (issue #12): maintenance is off at the end
of every outcome unless the plan keeps it, a span covers several phases, a downtime phase is
rolled back under maintenance, a backup restored once is not restored again in the same
rollback, and status shows what was rolled back as rolled back. Real CLI, real SQLite."""

from __future__ import annotations

import sqlite3
from typing import Any

from tests.conftest import Tm


def _write(tm: Tm, text: str) -> str:
    (tm.cwd / "p.yaml").write_text(text)
    return "p.yaml"


def _ledger(tm: Tm) -> list[str]:
    path = tm.cwd / "ledger"
    return path.read_text().split() if path.exists() else []


def _status(tm: Tm, deploy: str) -> dict[str, Any]:
    return dict(tm.json("status", deploy))


def test_maintenance_turned_on_by_a_rollback_step_goes_off(tm: Tm) -> None:
    """A phase's `rollback:` turns maintenance on (as seed plans do: stop, restore, restart);
    the deploy ends rolled back with the flag gone and status not saying "on now".

    Mutation tried: drop the generic off at the end of ``_maintenance_off_for``: the flag
    stays and this fails."""
    plan = _write(
        tm,
        """
name: rbmaint
environment: test
maintenance: {flag_file: maint.flag}
phases:
  - name: one
    steps:
      - {kind: run, command: "false"}
    rollback:
      - {kind: maintenance, action: "on"}
      - {kind: run, command: "test -f maint.flag && echo restored-under-maintenance >> ledger"}
""",
    )
    assert tm("run", plan).returncode == 1
    info = _status(tm, "rbmaint-1")
    assert info["state"] == "rolled_back"
    assert _ledger(tm) == ["restored-under-maintenance"]
    assert not (tm.cwd / "maint.flag").exists()
    assert info["maintenance"]["on_now"] is False


SPAN = """
name: span
environment: test
maintenance: {flag_file: maint.flag}
variables: {fail: "no"}
phases:
  - name: stop
    downtime: true
    steps:
      - {kind: maintenance, action: "on", until: "migrate"}
      - {kind: run, command: "echo stop >> ledger"}
  - name: migrate
    downtime: true
    steps:
      - {kind: run, command: "test -f maint.flag && echo migrate-under-maintenance >> ledger"}
  - name: start
    steps:
      - {kind: run, command: "test ! -f maint.flag && echo start >> ledger; test ${fail} = no"}
"""


def test_a_maintenance_span_covers_several_phases_with_one_on(tm: Tm) -> None:
    """`until: migrate`: maintenance stays on across the end of phase 1 into phase 2 (which
    needs no maintenance step of its own to pass `tminus check`), and is off when phase 2 ends,
    as one window in status.

    Mutation tried: ignore ``until`` in ``_span_end``: maintenance goes off when phase 1
    ends, phase 2's command does not see the flag, and this fails."""
    plan = _write(tm, SPAN)
    assert tm("check", plan).returncode == 0
    proc = tm("run", plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _ledger(tm) == ["stop", "migrate-under-maintenance", "start"]
    info = _status(tm, "span-1")
    assert len(info["maintenance"]["windows"]) == 1 and not info["maintenance"]["on_now"]


def test_check_rejects_a_span_to_an_earlier_or_unknown_phase(tm: Tm) -> None:
    plan = _write(tm, SPAN.replace('until: "migrate"', 'until: "nope"'))
    proc = tm("check", plan)
    assert proc.returncode == 2
    assert "maintenance 'until: nope' names no phase" in proc.stdout + proc.stderr
    assert "p.yaml:" in proc.stdout + proc.stderr


def test_keep_leaves_maintenance_on_after_success_but_not_after_rollback(tm: Tm) -> None:
    """`keep: true` is the plan's explicit choice to leave maintenance on when the deploy
    succeeds; a rollback still turns it off."""
    text = """
name: keep
environment: test
maintenance: {flag_file: maint.flag}
variables: {fail: "no"}
phases:
  - name: one
    downtime: true
    steps:
      - {kind: maintenance, action: "on", keep: true}
      - {kind: run, command: "test ${fail} = no"}
"""
    plan = _write(tm, text)
    assert tm("run", plan).returncode == 0
    assert (tm.cwd / "maint.flag").exists()
    (tm.cwd / "maint.flag").unlink()
    assert tm("run", plan, "--var", "fail=yes").returncode == 1
    assert _status(tm, "keep-2")["state"] == "rolled_back"
    assert not (tm.cwd / "maint.flag").exists()


def test_a_downtime_phase_is_rolled_back_under_maintenance(tm: Tm) -> None:
    """Phase 1 (downtime) succeeded and turned maintenance off; phase 2 fails. The rollback of
    phase 1 runs with maintenance on again, and it is off at the end. Status shows both
    phases and phase 1's step as rolled back (they used to show as succeeded).

    Mutation tried: skip the maintenance-on before a downtime phase's rollback items: the
    undo does not see the flag and this fails."""
    plan = _write(
        tm,
        """
name: dt
environment: test
maintenance: {flag_file: maint.flag}
phases:
  - name: schema
    downtime: true
    steps:
      - {kind: maintenance, action: "on"}
      - kind: run
        name: change schema
        command: "echo change >> ledger"
        undo:
          - {kind: run, command: "test -f maint.flag && echo undo-under-maintenance >> ledger"}
      - {kind: maintenance, action: "off"}
  - name: release
    steps:
      - {kind: run, command: "false"}
""",
    )
    assert tm("run", plan).returncode == 1
    assert _ledger(tm) == ["change", "undo-under-maintenance"]
    assert not (tm.cwd / "maint.flag").exists()
    info = _status(tm, "dt-1")
    assert info["state"] == "rolled_back"
    assert [p["state"] for p in info["phases"]] == ["rolled_back", "rolled_back"]
    steps = {s["key"]: s["state"] for s in info["steps"]}
    assert steps["phase/0/step/1"] == "rolled_back"


def test_one_backup_is_restored_once_per_rollback(tm: Tm) -> None:
    """Two `migrate` steps with `on_rollback: restore` of the same backup: the rollback
    restores it once (it used to restore it twice), and the data is as before.

    Mutation tried: remove the ``restored`` check in ``rollback.run_rollback``: two restores run
    and this fails."""
    db = tm.cwd / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"n{i}") for i in range(50)])
    conn.commit()
    conn.close()
    mig = tm.cwd / "m1"
    mig.mkdir()
    (mig / "000001_a.up.sql").write_text("UPDATE items SET name = 'a';\n")
    (mig / "000001_a.down.sql").write_text("SELECT 1;\n")
    mig2 = tm.cwd / "m2"
    mig2.mkdir()
    (mig2 / "000001_b.up.sql").write_text("DELETE FROM items WHERE id > 10;\n")
    (mig2 / "000001_b.down.sql").write_text("SELECT 1;\n")
    plan = _write(
        tm,
        f"""
name: twice
environment: test
targets:
  databases:
    app: {{kind: sqlite, url: "sqlite:///{db}"}}
    app2: {{kind: sqlite, url: "sqlite:///{db}"}}
phases:
  - name: data
    steps:
      - {{kind: backup, id: bk, database: app}}
      - {{kind: migrate, database: app, tool: sql_dir, dir: m1, on_rollback: restore, backup: bk}}
      - {{kind: migrate, database: app, tool: sql_dir, dir: m2, on_rollback: restore, backup: bk}}
      - {{kind: run, command: "false"}}
""",
    )
    proc = tm("run", plan, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    events = tm.json("log", "twice-1")
    restores = [
        e for e in events if e["type"] == "step.started" and "Restore" in (e["message"] or "")
    ]
    skipped = [e for e in events if e["type"] == "rollback.restore_skipped"]
    assert len(skipped) == 1, [e["type"] for e in events]
    assert len(restores) <= 1
    rows = sqlite3.connect(db).execute("SELECT id, name FROM items ORDER BY id").fetchall()
    assert rows == [(i, f"n{i}") for i in range(50)]


def test_step_names_are_interpolated_in_output_status_and_log(tm: Tm) -> None:
    """`name: Release ${release}` shows the release in the console, status and log (it showed
    the raw `${release}`), a secret in a name is masked."""
    plan = _write(
        tm,
        """
name: named
environment: test
variables: {release: "v42"}
secrets: {token: "${env:NAMED_TOKEN}"}
phases:
  - name: one
    steps:
      - {kind: run, name: "Release ${release}", command: "true"}
      - {kind: run, name: "Call with ${token}", command: "false"}
""",
    )
    proc = tm("run", plan, env={"NAMED_TOKEN": "s3cr3t-value"})
    assert proc.returncode == 1
    assert "Release v42" in proc.stdout and "${release}" not in proc.stdout
    info = _status(tm, "named-1")
    titles = [s["title"] for s in info["steps"]]
    assert "Release v42" in titles and "Call with ***" in titles
    assert "Call with ***" in info["reason"]
    text = str(tm.json("log", "named-1"))
    assert "s3cr3t-value" not in text and "${release}" not in text
