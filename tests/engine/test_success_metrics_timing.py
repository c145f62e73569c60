"""Success metrics are measured when the plan says: at the end of the window's last phase
(not after a 30-day delayed phase), and a metric with `after: D` once D has passed since then,
by `tminus resume` (which `tminus due` says is due); never at once, never only after the
delayed phase. Real SQLite `sql` checks count rows that the phases and the test insert.

Mutations tried (each made a test here fail, then was restored):
- `_summary` measuring every metric at once, `after` ignored: the 1h metric is measured with
  1 row at the end of the window (test_a_metric_after_1h...);
- the success summary node moved after the last phase (program.py, `in_window` = every
  phase): nothing is measured until the 30-day cleanup ran (same test);
- `measure_due` measuring pending metrics that are not due yet: the first resume measures it
  (same test);
- `resume` of a scheduled deploy not measuring due metrics before its early "scheduled"
  return: the metric waits for the cleanup phase (same test);
- pending metrics of a rolled-back deploy not cancelled (`CANCELLING_STATES` empty): `due`
  lists it (test_a_deploy_that_ended_succeeded...).

Each test opens one Store: a second one in the same process opens and closes the SQLite file
(``private_sqlite``), which drops the POSIX locks of the first one's connections.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import Any

from tests.conftest import Tm
from tminus.store.store import Store

PLAN = """\
name: met
environment: test
targets:
  databases:
    app: {{kind: sqlite, url: "sqlite:///{db}"}}
success_metrics:
  - name: rows at the end of the window
    target: "== 1"
    check: {{source: sql, database: app, query: "SELECT count(*) FROM t", expect: "== 1"}}
  - name: rows an hour later
    target: ">= 2"
    after: 1h
    check: {{source: sql, database: app, query: "SELECT count(*) FROM t", expect: ">= 2"}}
  - name: rows two hours later
    after: 2h
    check: {{source: sql, database: app, query: "SELECT count(*) FROM t", expect: ">= 2"}}
  - name: customers happy
    target: no complaints
phases:
  - name: now
    steps:
      - kind: run
        name: create and fill
        command: >-
          python3 -c "import sqlite3; c = sqlite3.connect('{db}');
          c.execute('CREATE TABLE t (x)'); c.execute('INSERT INTO t VALUES (1)'); c.commit()"
{cleanup}"""

CLEANUP = """\
  - name: cleanup
    after: 30d
    steps:
      - kind: run
        name: one more row
        command: >-
          python3 -c "import sqlite3; c = sqlite3.connect('{db}');
          c.execute('INSERT INTO t VALUES (3)'); c.commit()"
"""


def write_plan(tm: Tm, delayed: bool) -> str:
    db = tm.cwd / "app.db"
    text = PLAN.format(db=db, cleanup=CLEANUP.format(db=db) if delayed else "")
    path = tm.cwd / "met.yaml"
    path.write_text(text)
    return str(path)


def rows(tm: Tm) -> int:
    with sqlite3.connect(tm.cwd / "app.db") as c:
        return int(c.execute("SELECT count(*) FROM t").fetchone()[0])


def add_row(tm: Tm) -> None:
    with sqlite3.connect(tm.cwd / "app.db") as c:
        c.execute("INSERT INTO t VALUES (2)")


def measured(store: Store, deploy: str) -> list[dict[str, Any]]:
    return [e["data"] for e in store.events(deploy) if e["type"] == "metric.measured"]


def hours(h: float) -> dict[str, str]:
    return {"TMINUS_CLOCK_OFFSET": str(h * 3600)}


def test_a_metric_after_1h_is_measured_1h_after_the_window_not_after_the_cleanup(
    tm: Tm,
) -> None:
    plan = write_plan(tm, delayed=True)
    out = tm("run", plan, check=3)
    assert "2 success metric(s) pending: rows an hour later at" in out.stderr, out.stderr
    store = Store(f"sqlite:///{tm.cwd}/.tminus/state.db")
    window_end = store.phase_rows("met-1")[0]["ended_at"]
    due = window_end + timedelta(hours=1)

    info = tm.json("status", "met-1")
    at_end, later, _two, people = info["success_metrics"]
    assert (at_end["state"], at_end["status"], at_end["value"]) == ("measured", "passed", 1)
    assert later["state"] == "pending" and datetime.fromisoformat(later["due_at"]) == due
    assert people["state"] == "no check"
    assert measured(store, "met-1") == []  # never at once
    text = tm("status", "met-1", check=0).stdout
    assert f"success metric rows an hour later: pending, due at {due:%Y-%m-%d %H:%M:%S}" in text

    add_row(tm)  # the hour's traffic
    # before it is due: a resume measures nothing (the phase is not due either)
    tm("resume", "met-1", env=hours(0.5), check=3)
    assert measured(store, "met-1") == []
    items = tm.json("due")
    metric = next(i for i in items if i["what"] == "success_metric")
    assert metric["is_due"] is False and datetime.fromisoformat(metric["due_at"]) == due
    assert metric["metric"] == "rows an hour later"

    # an hour after the window: due (the cleanup phase is not); resume measures it, now
    assert tm("due", env=hours(1.01)).returncode == 3
    json_due = tm("due", "--output", "json", env=hours(1.01), check=3).stdout
    assert '"is_due": true' in json_due
    tm("resume", "met-1", env=hours(1.01), check=3)  # still scheduled for its cleanup
    (m,) = measured(store, "met-1")
    assert (m["name"], m["status"], m["value"]) == ("rows an hour later", "passed", 2)
    assert datetime.fromisoformat(m["due_at"]) == due and 0 <= m["late_s"] < 120
    assert rows(tm) == 2  # measured before the cleanup phase added its row
    assert tm.json("status", "met-1")["success_metrics"][1]["state"] == "measured"

    # 30 days later: the 2h metric, overdue, is measured first (2 rows), then the cleanup
    # runs; the 1h metric is not measured again
    tm("resume", "met-1", env=hours(30 * 24 + 0.01), check=0)
    one, two = measured(store, "met-1")
    assert one == m and (two["name"], two["value"]) == ("rows two hours later", 2)
    assert two["late_s"] > 29 * 86400
    assert rows(tm) == 3
    assert [i for i in tm.json("due") if i["id"] == "met-1"] == []


def test_a_deploy_that_ended_succeeded_measures_its_metric_on_resume(tm: Tm) -> None:
    plan = write_plan(tm, delayed=False)
    out = tm("run", plan, check=0)
    store = Store(f"sqlite:///{tm.cwd}/.tminus/state.db")  # one per test process: see above
    assert "succeeded" in out.stdout and "pending: rows an hour later" in out.stdout
    add_row(tm)
    early = tm("resume", "met-1", check=3)
    assert "no success metric is due yet" in early.stderr and measured(store, "met-1") == []
    done = tm("resume", "met-1", env=hours(1.01), check=3)  # the 2h one is not due yet
    assert "measured now: rows an hour later (passed)" in done.stderr
    done = tm("resume", "met-1", env=hours(2.01), check=0)
    assert "measured now: rows two hours later (passed)" in done.stdout
    again = tm("resume", "met-1", env=hours(3), check=0)
    assert "every success metric has been measured" in again.stdout
    assert len(measured(store, "met-1")) == 2

    # a second deploy, rolled back before its metric is due: it is cancelled, never measured
    tm("run", plan, check=1)  # CREATE TABLE t fails: it exists; nothing to undo
    tm.cwd.joinpath("app.db").unlink()
    tm("run", plan, check=0)
    tm("rollback", "met-3", check=0)
    assert tm.json("status", "met-3")["success_metrics"][1]["state"] == "cancelled"
    assert [i for i in tm.json("due") if i["id"] == "met-3"] == []
    assert tm("resume", "met-3", env=hours(2), check=2).returncode == 2
    assert measured(store, "met-3") == []


def test_after_without_a_check_is_rejected(tm: Tm) -> None:
    path = tm.cwd / "bad.yaml"
    path.write_text(
        "name: bad\nsuccess_metrics:\n  - name: vibes\n    after: 1h\n"
        "phases:\n  - name: a\n    steps: [{kind: run, command: 'true'}]\n"
    )
    out = tm("check", str(path), check=2)
    assert "'after' says when the metric's check runs: it needs a 'check'" in out.stdout + (
        out.stderr
    )
    assert "bad.yaml:3:" in out.stdout + out.stderr and "Traceback" not in out.stderr
