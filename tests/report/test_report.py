"""`tminus report` and `tminus signoff` (issue #15 item 5), end to end through the real CLI.

A small plan runs for real (`tminus run`, the approval, `tminus resume`): two phases in the
window (one a downtime phase under maintenance) and a 30-day delayed cleanup. Then sign-offs,
then the report in md, html and json, each checked against the store's own rows (read with
sqlite3, not through the report): the actual bars are sized from the phase rows' durations,
the downtime figure is the maintenance window recorded, the sign-offs show who and when.

The watch's measurements are written by this test with `Store.event("watch.measurement", …)`:
a stand-in for the post-deployment watch, which another change of issue #15 writes; the
report reads the events it will emit (shape in docs/report.md).
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Tm

SECRET = "s3cr3t-Token-value"

PLAN = """
name: demo
environment: test
window:
  max_downtime: 5m
roles:
  lead: {people: [bob, carol]}
  ops: {}
approvals:
  required: [lead]
  separation_of_duties: true
secrets:
  token: "${env:DEMO_TOKEN}"
variables:
  fail: "no"
maintenance:
  flag_file: maint.flag
checks:
  answer: {source: command, command: "echo 42", expect: "== 42"}
success_metrics:
  - {name: answer is right, target: "== 42", check: answer}
notifications:
  channels:
    log: {kind: log}
  rules:
    - {when: success, channels: [log], message: "done with ${token}"}
    - {when: failure, channels: [log]}
phases:
  - name: prepare
    estimate: 2s
    steps:
      - kind: run
        name: slow step
        command: "sleep 0.6; echo using ${token}"
        undo: [{kind: run, command: "true"}]
  - name: migrate
    estimate: 1s
    downtime: true
    steps:
      - {kind: maintenance, action: on}
      - {kind: run, name: short, command: "sleep 0.3"}
      - {kind: run, name: maybe fail, command: "test ${fail} = no"}
    rollback:
      - {kind: run, name: undo migrate, command: "echo undo"}
  - name: cleanup
    after: 30d
    estimate: 1s
    steps:
      - {kind: run, name: rm, command: "true"}
"""


# --- helpers ----------------------------------------------------------------------------------
@pytest.fixture
def demo(tm: Tm) -> Tm:
    tm.env["DEMO_TOKEN"] = SECRET
    (tm.cwd / "plan.yaml").write_text(PLAN)
    return tm


def run_demo(tm: Tm, *extra: str) -> tuple[str, int]:
    first = tm("run", "plan.yaml", *extra)
    assert first.returncode == 3, first.stdout + first.stderr
    deploy = tm.latest()["id"]
    tm("approve", deploy, "--role", "lead", "--as", "bob", check=0)
    done = tm("resume", deploy)
    return deploy, done.returncode


def db(tm: Tm, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tm.cwd / ".tminus" / "state.db") as conn:
        return conn.execute(sql, args).fetchall()


def ts(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def reports(tm: Tm, deploy: str) -> tuple[str, str, dict[str, Any]]:
    """The report in the three formats (md to stdout, html and json through -o)."""
    md = tm("report", deploy, check=0).stdout
    tm("report", deploy, "--format", "html", "-o", "r.html", check=0)
    tm("report", deploy, "-o", "r.json", check=0)  # the format from the suffix
    html = (tm.cwd / "r.html").read_text()
    data = json.loads((tm.cwd / "r.json").read_text())
    return md, html, data


def rects(html: str, cls: str) -> dict[int, dict[str, float]]:
    """The Gantt bars of one class, by phase: x, width, data-duration-s."""
    out = {}
    for m in re.finditer(rf'<rect class="{cls}( critical)?" data-phase="(\d+)"([^>]*)>', html):
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(3)))
        out[int(m.group(2))] = {
            k: float(attrs[a]) for k, a in (("x", "x"), ("w", "width"), ("d", "data-duration-s"))
        }
    return out


def self_contained(text: str) -> None:
    low = text.lower()
    for bad in ("<script", "src=", "href=", "url(", "@import", "http://", "https://", "<link"):
        assert bad not in low, bad


# --- the report of a real run -----------------------------------------------------------------
def test_report_of_a_real_run_in_three_formats(demo: Tm) -> None:
    """Bars from the phase rows, downtime from the maintenance rows, sign-offs with who and
    when, the watch's thresholds, notifications, no secret, nothing external.

    The secret reaches the store once unmasked, on purpose: in a sign-off's comment (typed by
    a person, stored as given); the report masks it with the plan's secrets. Mutation tried:
    :func:`tminus.report.mask.plan_masker` returning an empty masker (the secret shows in
    every format, this test fails)."""
    tm = demo
    deploy, code = run_demo(tm, "--var", "fail=no")
    assert code == 3  # the window succeeded; the 30-day cleanup is scheduled
    assert tm.latest()["state"] == "scheduled"
    tm("signoff", deploy, "--milestone", "day-1", "--role", "lead", "--as", "carol",
       "--comment", "error rate flat", check=0)  # fmt: skip
    leak = f"checked with {SECRET} at postgresql://app:hunter22@db/app"  # typed by a person
    tm("signoff", deploy, "--milestone", "day-1", "--role", "ops", "--as", "dave",
       "--comment", leak, check=0)  # fmt: skip
    tm("signoff", deploy, "--milestone", "day-7", "--role", "lead", "--as", "bob", check=0)
    write_watch(tm, deploy)
    md, html, data = reports(tm, deploy)

    assert data["schema"] == "tminus.report/1"
    phases = {
        i: (ts(a), ts(b)) for i, a, b in db(tm, "SELECT idx, started_at, ended_at FROM phases")
    }
    real = {i: (b - a).total_seconds() for i, (a, b) in phases.items()}
    assert real[0] > 0.5 and real[1] > 0.25  # the sleeps
    tl = {p["index"]: p for p in data["timeline"]["phases"]}
    for i, seconds in real.items():
        assert tl[i]["actual_s"] == pytest.approx(seconds, abs=1e-3)
        assert tl[i]["variance_s"] == pytest.approx(seconds - [2, 1][i], abs=1e-3)
    assert tl[2]["actual_s"] is None and tl[2]["after_s"] == 30 * 86400
    assert data["timeline"]["groups"] == [[0, 1], [2]]
    # planned: estimates end to end from the first phase's start; the cleanup 30 days on
    origin = phases[0][0]
    assert ts(tl[1]["planned_start"]) == origin + timedelta(seconds=2)
    assert ts(tl[2]["planned_start"]) == origin + timedelta(days=30, seconds=3)
    # critical path: both phases, with the longest step of each
    crit = {c["phase"]: c["step"]["title"] for c in data["timeline"]["critical_path"]}
    assert crit == {0: "slow step", 1: "short"}

    # the HTML Gantt chart: actual bars sized from the real durations, planned from estimates
    window_svg = html[html.index('<svg width="900"') : html.index("</svg>")]
    scale = float(re.search(r'data-px-per-s="([\d.]+)"', window_svg)[1])  # type: ignore[index]
    actual, planned = rects(window_svg, "actual"), rects(window_svg, "planned")
    assert set(actual) == {0, 1} and set(planned) == {0, 1}
    for i, seconds in real.items():
        assert actual[i]["d"] == pytest.approx(seconds, abs=1e-3)
        assert actual[i]["w"] == pytest.approx(seconds * scale, abs=0.01)
    assert planned[0]["w"] == pytest.approx(2 * scale, abs=0.01)
    assert planned[1]["x"] == pytest.approx(planned[0]["x"] + planned[0]["w"], abs=0.02)
    assert actual[1]["x"] - actual[0]["x"] == pytest.approx(
        (phases[1][0] - phases[0][0]).total_seconds() * scale, abs=0.02
    )
    assert 'class="critical-step" data-phase="0"' in window_svg

    # downtime: the maintenance window recorded, against max_downtime (5m)
    ((on, off),) = db(tm, "SELECT on_at, off_at FROM maintenance")
    measured = (ts(off) - ts(on)).total_seconds()
    assert measured > 0.25
    dt = data["downtime"]
    assert dt["measured_s"] == pytest.approx(measured, abs=1e-3)
    assert dt["max_downtime_s"] == 300 and dt["within"] is True
    assert dt["windows"][0]["phase_name"] == "migrate"
    assert f"data-seconds='{measured:.3f}'" in html
    assert f"Measured downtime {measured:.2f}s; allowed (window `max_downtime`) 5:00" in md

    # approvals and sign-offs: who and when (the approval rows' times)
    rows = db(tm, "SELECT gate, role, person, ts FROM approvals ORDER BY id")
    when = {(g, r): ts(t) for g, r, _, t in rows}
    assert data["approvals"] == [
        {"gate": "approvals", "role": "lead", "person": "bob", "comment": None,
         "at": when[("approvals", "lead")].isoformat()}
    ]  # fmt: skip
    signed = {
        m["milestone"]: [(s["role"], s["person"], s["at"]) for s in m["signatures"]]
        for m in data["signoffs"]
    }
    assert signed == {
        "day-1": [
            ("lead", "carol", when[("signoff:day-1", "lead")].isoformat()),
            ("ops", "dave", when[("signoff:day-1", "ops")].isoformat()),
        ],
        "day-7": [("lead", "bob", when[("signoff:day-7", "lead")].isoformat())],
    }
    carol_at = f"{when[('signoff:day-1', 'lead')]:%Y-%m-%d %H:%M:%S} UTC"
    assert f"| lead | carol | {carol_at} | error rate flat |" in md
    assert f"<td>carol</td><td>{carol_at}</td><td>error rate flat</td>" in html
    assert "Milestone **day-7**" in md

    # the watch: one chart per check, thresholds drawn where the measurements put them
    check_watch(md, html, data)
    # success metric and notifications, as recorded; the secret never shows
    (metric,) = data["success_metrics"]
    assert (metric["name"], metric["state"], metric["status"]) == (
        "answer is right", "measured", "passed"
    )  # fmt: skip
    texts = [n["message"] for n in data["notifications"]]
    assert texts == ["done with ***"]
    assert "| success | log | log | done with *** |" in md  # delivered to the log channel
    for text in (md, html, json.dumps(data)):
        assert SECRET not in text and "hunter22" not in text
    assert "| ops | dave | " in md and "| checked with *** at postgresql://app:***@db/app |" in md
    self_contained(md)
    self_contained(html)
    assert data["rollbacks"] == {"episodes": [], "events": []} and "No rollback." in md


def write_watch(tm: Tm, deploy: str) -> None:
    """Stand-in for the watch: `watch.measurement` events as it will record them."""
    from tminus.store import Store

    store = Store(f"sqlite:///{tm.cwd / '.tminus' / 'state.db'}")
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    values = [0.4, 0.9, 1.6, None, 3.5, 0.8]
    for n, v in enumerate(values):
        status = "error" if v is None else "critical" if v > 3 else "warn" if v > 1 else "ok"
        store.event(deploy, "watch.measurement", f"error_rate {v}", data={
            "check": "error_rate", "period": "day 1" if n < 4 else "day 2", "status": status,
            "value": v, "warn": 1.0, "critical": 3.0, "at": (t0 + timedelta(hours=n)).isoformat(),
        })  # fmt: skip
    store.event(deploy, "watch.measurement", "latency", data={
        "check": "latency_ms", "period": "day 1", "status": "ok", "value": 120,
        "warn": 250, "critical": None, "at": t0.isoformat(),
    })  # fmt: skip


THRESHOLD = r'<line class="threshold (\w+)" data-value="([\d.]+)"[^>]*? y1="([\d.]+)"'
POINT = r'<circle class="point (\w+)" data-value="([\d.]*)" cx="[\d.]+" cy="([\d.]+)"'


def check_watch(md: str, html: str, data: dict[str, Any]) -> None:
    checks = {c["check"]: c for c in data["watch"]["checks"]}
    assert set(checks) == {"error_rate", "latency_ms"}
    err = checks["error_rate"]
    assert [p["value"] for p in err["points"]] == [0.4, 0.9, 1.6, None, 3.5, 0.8]
    assert err["counts"] == {"ok": 3, "warn": 1, "error": 1, "critical": 1}
    chart = html[html.index('data-check="error_rate"') :]
    chart = chart[: chart.index("</svg>")]
    lines = {
        (m[1], m[2]): float(m[3])
        for m in re.finditer(THRESHOLD, chart)
    }  # fmt: skip
    assert set(lines) == {("warn", "1"), ("critical", "3")}
    # drawn at their values: the critical line (3) above the warn line (1), and the point
    # measured at 3.5 above the critical line, the one at 0.9 below the warn line
    points = {
        m[2]: (m[1], float(m[3]))
        for m in re.finditer(POINT, chart)
    }  # fmt: skip
    assert points["3.5"][0] == "critical" and points["0.9"][0] == "ok"
    assert points["3.5"][1] < lines[("critical", "3")] < lines[("warn", "1")] < points["0.9"][1]
    latency = html[html.index('data-check="latency_ms"') :]
    latency = latency[: latency.index("</svg>")]
    assert 'class="threshold warn" data-value="250"' in latency
    assert 'class="threshold critical"' not in latency
    assert "| 2026-03-01 16:00:00 UTC | day 2 | 3.5 | CRITICAL | 1.0 | 3.0 |" in md


# --- a failing run ----------------------------------------------------------------------------
def test_report_of_a_rolled_back_run_gives_the_cause(demo: Tm) -> None:
    """The rollback's cause (the failed step's error), the actions it ran, its outcome; the
    failed phase's bar is drawn failed; no sign-off on a rolled-back deploy."""
    tm = demo
    deploy, code = run_demo(tm, "--var", "fail=yes")
    assert code == 1
    assert tm.latest()["state"] == "rolled_back"
    md, html, data = reports(tm, deploy)
    (episode,) = data["rollbacks"]["episodes"]
    assert episode["cause"] == "maybe fail failed: exit status 1"
    assert episode["outcome"] == "rolled_back"
    ran = [a["title"] for a in episode["actions"]]
    assert "undo migrate" in ran and all(a["state"] == "succeeded" for a in episode["actions"])
    assert "rolled back because: maybe fail failed: exit status 1" in md
    assert "<b class='cause'>maybe fail failed: exit status 1</b>" in html
    assert re.search(r'<rect class="actual critical" data-phase="1"[^>]*fill="#c0392b"', html)
    assert [n["when"] for n in data["notifications"]] == ["failure"]
    refused = tm("signoff", deploy, "--milestone", "day-1", "--role", "lead", "--as", "carol")
    assert refused.returncode == 2
    assert f"deploy {deploy} is rolled_back: only a deploy that succeeded" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert db(tm, "SELECT COUNT(*) FROM approvals WHERE gate LIKE 'signoff:%'") == [(0,)]


# --- sign-off refusals ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "nope", "--as", "carol"], "error: no role 'nope' in plan 'demo'"),
        (
            ["--role", "lead", "--as", "mallory", "--milestone", "day-7"],
            "error: mallory is not in role 'lead'",
        ),
        (
            ["--role", "ops", "--as", "alice"],
            "error: separation of duties: alice started demo-1 and cannot sign it off",
        ),
        (["--role", "lead", "--as", "bob"], "error: lead has already signed off 'day-1' of demo-1"),
        (["--role", "ops", "--as", "dave", "--milestone", "day 1!"], "is not a milestone name"),
    ],
    ids=["unknown-role", "not-a-member", "separation-of-duties", "twice", "bad-milestone"],
)
def test_signoff_refusals(demo: Tm, args: list[str], message: str) -> None:
    """Each refusal exits 2 with its message, no traceback, and records nothing.

    Mutations tried in tminus/report/signoff.py, each making its case fail: the `role not in
    plan.roles` guard removed (unknown-role: an internal error, exit 1); the `people` check
    removed (not-a-member: exit 0, a row for mallory); the `separation_of_duties` check
    removed (separation-of-duties: exit 0); the look-up of an earlier sign-off removed (twice:
    exit 0, a second row for lead/day-1); `can_sign_off` made to return True
    (test_report_of_a_rolled_back_run_gives_the_cause: exit 0 on a rolled-back deploy)."""
    tm = demo
    deploy, _ = run_demo(tm)
    assert deploy == "demo-1"
    tm("signoff", deploy, "--milestone", "day-1", "--role", "lead", "--as", "carol", check=0)
    before = db(tm, "SELECT COUNT(*) FROM approvals")
    milestone = [] if "--milestone" in args else ["--milestone", "day-1"]  # lead signed it
    proc = tm("signoff", deploy, *milestone, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert db(tm, "SELECT COUNT(*) FROM approvals") == before


def test_report_of_an_unknown_deploy_is_exit_2(tm: Tm) -> None:
    proc = tm("report", "nope-1")
    assert proc.returncode == 2 and "no deploy 'nope-1'" in proc.stderr


# --- seed 000: the report of a real rehearsal -------------------------------------------------
def test_report_of_seed_000_database_phase_rehearsal(tm: Tm, mysql_url: str) -> None:
    """The report of a real rehearsal of seed 000/001 (archive-import) `Phase 1: Database` on
    MariaDB, driven as tests/examples/test_seed_rehearsals.py drives it (same stand-in
    bin/magento, same generated rows, `--phase`, `--skip-checklist`, approvals given by the
    test): actual bar, downtime (the phase's maintenance window) and day-1 sign-offs. Phases
    2-5 do not run (the report shows them planned, not actual); no watch runs."""
    import shutil

    from tests.examples.test_seed_rehearsals import ARCHIVE_ROLES, SEEDS, rehearse, seed_magento

    root = tm.cwd / "magento"
    shutil.copytree(SEEDS / "archive-import" / "rehearsal" / "magento", root)
    tm.env["MAGENTO_DATABASE_URL"] = mysql_url
    seed_magento(mysql_url)
    done = rehearse(
        tm,
        "archive-import.yaml",
        "Phase 1: Database",
        ARCHIVE_ROLES,
        "--var",
        f"magento_root={root}",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    deploy = tm.latest()["id"]
    for role, who in (("technical_lead", "tl"), ("operations", "ops-lead")):
        tm("signoff", deploy, "--milestone", "day-1", "--role", role, "--as", who, check=0)
    md, html, data = reports(tm, deploy)
    assert data["deploy"]["selection"] == ["Phase 1: Database"]
    ((start, end),) = db(tm, "SELECT started_at, ended_at FROM phases")
    seconds = (ts(end) - ts(start)).total_seconds()
    (phase,) = data["timeline"]["phases"]
    assert phase["name"] == "Phase 1: Database" and phase["estimate_s"] == 300
    assert phase["actual_s"] == pytest.approx(seconds, abs=1e-3)
    bar = rects(html, "actual")[0]
    assert bar["d"] == pytest.approx(seconds, abs=1e-3) and bar["w"] > 0
    windows = db(tm, "SELECT on_at, off_at FROM maintenance")
    assert windows
    measured = sum((ts(b) - ts(a)).total_seconds() for a, b in windows)
    assert data["downtime"]["measured_s"] == pytest.approx(measured, abs=1e-3)
    assert data["downtime"]["max_downtime_s"] == 300 and data["downtime"]["within"] is True
    (day1,) = data["signoffs"]
    assert [(s["role"], s["person"]) for s in day1["signatures"]] == [
        ("technical_lead", "tl"),
        ("operations", "ops-lead"),
    ]
    assert "| technical_lead | tl |" in md
    for text in (md, html, json.dumps(data)):
        assert mysql_url not in text  # the plan's database_url secret is masked
    self_contained(html)
