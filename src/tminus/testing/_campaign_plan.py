"""The crash campaign's plan, and what the end of each variant must look like.

Used by :mod:`tminus.testing.crash_campaign`. The plan touches a PostgreSQL database, a config
file and maintenance mode; its three non-idempotent steps (their undo steps, a phase's rollback
step and an operation too) append to a ledger file the judge reads at the end.
"""

from __future__ import annotations

__all__ = ["DONE", "EXPECTED_LEDGER", "EXPECTED_STATE", "PLAN", "ROWS", "SLOW"]

PLAN = """
name: campaign
environment: test
maintenance: {{flag_file: "{work}/maintenance.flag"}}
targets:
  databases:
    app: {{kind: postgres, url: "{url}", tables: [items]}}
variables:
  fail: "no"
phases:
  - name: prepare
    steps:
      - kind: run
        name: ledger prepare
        command: "{slow}; echo fwd:prepare >> {work}/ledger; <done ledger_prepare>"
        undo:
          - kind: run
            name: unledger prepare
            command: "{slow}; echo undo:prepare >> {work}/ledger; <done unledger_prepare>"
      - {{kind: backup, id: db_backup, database: app, idempotent: true}}
      - kind: run
        name: new config
        idempotent: true
        command: "cp {work}/config.new {work}/c.tmp && mv {work}/c.tmp {work}/app.conf"
        undo:
          - kind: run
            name: old config back
            idempotent: true
            command: "cp {work}/config.old {work}/c.tmp && mv {work}/c.tmp {work}/app.conf"
  - name: migrate
    downtime: true
    steps:
      - {{kind: maintenance, action: "on"}}
      - kind: migrate
        database: app
        tool: sql_dir
        dir: "{work}/migrations"
        on_rollback: restore
        backup: db_backup
        idempotent: true
      - kind: run
        name: ledger migrate
        command: "{slow}; echo fwd:migrate >> {work}/ledger; <done ledger_migrate>"
        undo:
          - kind: run
            name: unledger migrate
            command: "{slow}; echo undo:migrate >> {work}/ledger; <done unledger_migrate>"
      - {{kind: maintenance, action: "off"}}
    rollback:
      - kind: run
        name: rollback migrate
        command: "{slow}; echo rb:migrate >> {work}/ledger; <done rollback_migrate>"
    verify:
      - {{name: migrated, source: sql, database: app,
         query: "SELECT count(*) FROM items WHERE note = 'n'", expect: "== {rows}"}}
  - name: finish
    steps:
      - kind: run
        name: ledger finish
        command: "{slow}; echo fwd:finish >> {work}/ledger && test ${{fail}} != yes;
          <done ledger_finish>"
        undo:
          - kind: run
            name: unledger finish
            command: "{slow}; echo undo:finish >> {work}/ledger; <done unledger_finish>"
operations:
  rotate:
    description: rotate a token (appends to the ledger; not idempotent)
    steps:
      - kind: run
        name: ledger rotate
        command: "{slow}; echo op:rotate >> {work}/ledger; <done ledger_rotate>"
      - kind: sql
        database: app
        idempotent: true
        statements: ["UPDATE items SET name = name || '' WHERE id = 1"]
"""

ROWS = 200

#: What each ledger step does before it appends: a short pause, and when its runner has died
#: meanwhile (it is an orphan: ``$PPID``, the runner, is gone), a long one, as a real long
#: step (a restore, a data fix) would still be running when someone resumes the deploy. An
#: orphan that is not killed first appends late, and the judge sees the line twice.
SLOW = "sleep 0.2; kill -0 $PPID 2>/dev/null || sleep 30"

#: What each ledger step does last: it writes its exit status to ``done.<its title>`` in the
#: work directory and exits with it. The operator reads this marker only where the crash report
#: cannot know whether the action had finished (a crash right after a child was recorded: on a
#: loaded machine the child can end before its runner is killed), as an operator would look at
#: whether the action's process had finished and how; the judge never reads it.
DONE = r"rc=$?; echo $rc > {work}/done.\1; exit $rc"

#: What the ledger must hold at the end of each variant (each line exactly once, in order).
EXPECTED_LEDGER = {
    "success": ["fwd:prepare", "fwd:migrate", "fwd:finish"],
    # the last step fails: its undo is not run; the others are undone newest first
    # then phase by phase, newest first: the phase's rollback steps, then its steps' undo
    "rollback": [
        "fwd:prepare",
        "fwd:migrate",
        "fwd:finish",
        "rb:migrate",
        "undo:migrate",
        "undo:prepare",
    ],
    "operation": ["op:rotate"],
}
EXPECTED_STATE = {"success": "succeeded", "rollback": "rolled_back", "operation": "succeeded"}
