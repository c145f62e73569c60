"""``tminus serve`` end to end (issue #15): a real server process, real workers, a real store,
on a travelled clock (``TMINUS_CLOCK_FILE`` through the testing seam; see conftest.py). No
test sleeps for the time it covers.

Mutations tried (each made the test named fail):
- :meth:`tminus.serve.server.Server._needs_runner` without its ``due`` branch → the
  cleanup phase never runs (``test_cleanup...``);
- without its ``gate`` branch → the approval given after T-0 is never acted on
  (``test_missing_approval...``);
- ``Engine._forward`` without its handover check → the worker ignores SIGTERM's request and
  runs the next step too (``test_sigterm...``: ``second.done`` exists);
- :func:`tminus.serve.fire._watch` without the rollback drive → the CRITICAL watch leaves the
  deploy unrolled (``test_watch_critical...``).

Two servers on PostgreSQL: test_serve_pg.py.
"""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.serve.conftest import Serve, write

T0 = datetime(2027, 1, 10, 2, 0, tzinfo=UTC)

PLAN = """\
tminus: 1
name: countdown
environment: test
window:
  start: "2027-01-10T02:00:00"
  timezone: UTC
  duration: 2h
roles:
  lead:
    people: [lena]
approvals:
  required: [lead]
checklist:
  - item: Release notes reviewed
notifications:
  channels:
    team:
      kind: log
  rules:
    - when: before_window
      before: 48h
      message: "48 hours to go for ${plan_name}"
    - when: before_window
      before: 24h
    - when: before_window
      before: 1h
    - when: window_start
    - when: during
      every: 30m
    - when: after_success
      after: 1h
phases:
  - name: deploy
    estimate: 1m
    on_failure: pause
    steps:
      - kind: run
        name: write the version
        command: echo 2 > version.txt
  - name: cleanup
    after: 30d
    on_failure: pause
    steps:
      - kind: run
        name: clean up
        command: touch cleaned.txt
watch:
  on_critical: rollback
  schedule:
    - every: 1h
      for: 1d
      label: hourly, day 1
      checks:
        - source: command
          name: error rate
          command: cat value.txt
          warn: "> 5"
          critical: "> 10"
    - every: 1d
      for: 6d
      label: daily, days 2-7
      checks:
        - source: command
          name: error rate daily
          command: cat value.txt
          critical: "> 10"
"""


def _notices(s: Serve, deploy: str) -> list[str]:
    return [str(e["key"]) for e in s.events(deploy) if e["type"] == "notify"]


def _schedule(s: Serve, *extra: str) -> str:
    write(s.cwd / "plan.yaml", PLAN)
    write(s.cwd / "value.txt", "1\n")
    s.travel_to(T0 - timedelta(days=3))
    out = s.tm("schedule", "plan.yaml", "--confirm", "Release notes reviewed", *extra, check=0)
    assert "scheduled: starts in 3d" in out.stdout, out.stdout
    assert "1 approval(s) missing (lead)" in out.stdout
    return "countdown-1"


def _phase_state(s: Serve, deploy: str, index: int) -> str:
    return str(s.status(deploy)["phases"][index]["state"])


def test_countdown_notices_fire_once_in_order_and_the_approval_lets_it_start(
    serve_env: Serve,
) -> None:
    s = serve_env
    d = _schedule(s)
    listed = s.tm("list", check=0).stdout
    assert "starts in 3d" in listed and "approval(s) missing" in listed
    s.start()
    steps: list[tuple[timedelta, str]] = [
        (timedelta(hours=-48), "notice:0:"),
        (timedelta(hours=-24), "notice:1:"),
    ]
    for offset, key in steps:
        s.travel_to(T0 + offset)
        s.wait_for(key, lambda key=key: any(k.startswith(key) for k in _notices(s, d)))
    s.travel_to(T0 - timedelta(hours=2))
    approved = s.tm("approve", d, "--role", "lead", "--as", "lena", check=0).stdout
    assert "tminus serve (pid" in approved  # not "continue with: tminus resume"
    assert "gates complete" in s.status(d)["countdown"]
    for offset, key in [
        (timedelta(hours=-1), "notice:2:"),
        (timedelta(), "window_start:3:"),
    ]:
        s.travel_to(T0 + offset)
        s.wait_for(key, lambda key=key: any(k.startswith(key) for k in _notices(s, d)))
    s.wait_for("the deploy phase", lambda: _phase_state(s, d, 0) == "succeeded")
    assert (s.cwd / "version.txt").read_text().strip() == "2"
    for offset, key in [
        (timedelta(minutes=30), "during:4:1"),
        (timedelta(minutes=60), "during:4:2"),
        (timedelta(minutes=62), "after_success:5"),
    ]:
        s.travel_to(T0 + offset)
        s.wait_for(key, lambda key=key: key in _notices(s, d))
    keys = _notices(s, d)
    prefixes = ["notice:0:", "notice:1:", "notice:2:", "window_start:3:"]
    prefixes += ["during:4:1", "during:4:2", "after_success:5"]
    assert len(keys) == len(prefixes), keys  # each once
    for k, p in zip(keys, prefixes, strict=True):  # in order
        assert k.startswith(p), keys
    first = next(e for e in s.events(d) if e["type"] == "notify")
    assert first["message"] == "48 hours to go for countdown"  # the rule's message, resolved
    assert first["data"]["channels"] == ["team"] and first["data"]["queued"] == 1
    # the `log` channel's messages are delivered by the server: one `notify.sent` each
    sent = s.wait_for(
        "7 messages sent",
        lambda: (n := [e for e in s.events(d) if e["type"] == "notify.sent"]) and len(n) == 7 and n,
    )
    assert len({e["data"]["key"] for e in sent}) == 7


def test_missing_approval_stops_it_at_t0_and_a_late_approval_continues_it(
    serve_env: Serve,
) -> None:
    s = serve_env
    d = _schedule(s)
    s.start()
    s.travel_to(T0)
    s.wait_for("awaiting approval", lambda: s.status(d)["stored_state"] == "awaiting_approval")
    assert _phase_state(s, d, 0) == "pending"  # nothing started
    assert not (s.cwd / "version.txt").exists()
    types = [e["type"] for e in s.events(d)]
    assert "deploy.awaiting_approval" in types
    s.tm("approve", d, "--role", "lead", "--as", "lena", check=0)
    s.wait_for("the deploy phase", lambda: _phase_state(s, d, 0) == "succeeded", timeout=20)


def test_cleanup_phase_runs_by_itself_when_due(serve_env: Serve) -> None:
    s = serve_env
    d = _schedule(s)
    s.tm("approve", d, "--role", "lead", "--as", "lena", check=0)
    s.start()
    s.travel_to(T0)
    s.wait_for("the deploy phase", lambda: _phase_state(s, d, 0) == "succeeded")
    assert s.status(d)["stored_state"] == "scheduled"  # the cleanup phase waits 30 days
    assert not (s.cwd / "cleaned.txt").exists()
    s.travel_to(T0 + timedelta(days=30, minutes=5))
    s.wait_for("the cleanup phase", lambda: s.status(d)["stored_state"] == "succeeded")
    assert (s.cwd / "cleaned.txt").exists()


def _measurements(s: Serve, d: str) -> list[dict[str, Any]]:
    return list(s.tm.json("watch", d)["measurements"])


def test_watch_critical_on_day_2_rolls_back_within_one_interval(serve_env: Serve) -> None:
    s = serve_env
    d = _schedule(s)
    s.tm("approve", d, "--role", "lead", "--as", "lena", check=0)
    s.start()
    s.travel_to(T0)
    s.wait_for("the deploy phase", lambda: _phase_state(s, d, 0) == "succeeded")
    base = T0  # the phase ended a second or two after T-0
    s.travel_to(base + timedelta(hours=1, seconds=15))
    s.wait_for("the first measurement", lambda: len(_measurements(s, d)) >= 1)
    first = _measurements(s, d)[0]
    assert first["status"] == "ok" and first["value"] == 1
    assert first["warn"] == 5 and first["critical"] == 10  # the thresholds, for the chart
    write(s.cwd / "value.txt", "12\n")  # day 2: the error rate turns CRITICAL
    s.travel_to(base + timedelta(days=2, seconds=15))
    s.wait_for("the rollback", lambda: s.status(d)["stored_state"] == "rolled_back", timeout=40)
    rows = _measurements(s, d)
    crit = [r for r in rows if r["status"] == "critical"]
    assert crit and all(r["value"] == 12 for r in crit)
    # Within one interval of the daily period: measured at the day-2 time, not a day later
    # (the hourly period's last, missed measurement is taken once, late, in the same pass).
    first_crit = min(datetime.fromisoformat(r["at"]) for r in crit)
    assert first_crit - (base + timedelta(days=2)) < timedelta(days=1)
    assert "watch CRITICAL" in s.status(d)["reason"]
    pending = [t for t in s.status(d)["timers"]]
    assert pending == []  # nothing more is due for a rolled-back deploy
    text = s.tm("watch", d, check=0).stdout
    assert "CRIT 12" in text and "(ended)" in text


def test_watch_stop_ends_it(serve_env: Serve) -> None:
    s = serve_env
    d = _schedule(s)
    s.tm("approve", d, "--role", "lead", "--as", "lena", check=0)
    s.start()
    s.travel_to(T0)
    s.wait_for("the watch planned", lambda: s.tm.json("watch", d)["next"])
    out = s.tm("watch", d, "--stop", check=0).stdout
    assert "watch stopped by alice" in out
    view = s.tm.json("watch", d)
    assert view["ended"] and view["next"] == []


HANDOVER_PLAN = """\
tminus: 1
name: handover
environment: test
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: run
        name: slow first step
        command: sleep 3 && touch first.done
      - kind: run
        name: second step
        command: touch second.done
"""


def test_sigterm_lets_the_step_finish_then_hands_the_deploy_over(serve_env: Serve) -> None:
    s = serve_env
    write(s.cwd / "plan.yaml", HANDOVER_PLAN)
    out = s.tm("schedule", "plan.yaml", "--at", "+2s", check=0)
    assert "scheduled" in out.stdout
    proc, _port = s.start()
    d = "handover-1"
    s.wait_for("the first step running", lambda: s.status(d)["current"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    st = s.status(d)
    assert (s.cwd / "first.done").exists()  # the step in flight finished
    assert not (s.cwd / "second.done").exists()  # the next did not start
    assert st["stored_state"] == "paused" and st["reason"].startswith("handed over")
    assert any(e["type"] == "deploy.handed_over" for e in s.events(d))
    assert "tminus serve stopped" in s.log()
    s.start("serve2")  # another server resumes it by itself
    s.wait_for("the deploy to finish", lambda: s.status(d)["stored_state"] == "succeeded")
    assert (s.cwd / "second.done").exists()


def test_healthz_and_metrics(serve_env: Serve) -> None:
    s = serve_env
    d = _schedule(s)
    _proc, port = s.start()
    status, body = s.get(port, "/healthz")
    assert status == 200 and '"status":"ok"' in body
    s.travel_to(T0 - timedelta(hours=48))
    s.wait_for("a notice", lambda: _notices(s, d))
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        s.get(port, "/metrics")
    assert anonymous.value.code == 401  # nothing but /status and /healthz is anonymous
    token = s.tm("tokens", "create", "--person", "prometheus").stdout.strip().splitlines()[-1]
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read().decode()
    assert 'tminus_deploys{state="scheduled"} 1.0' in text
    assert 'tminus_timers{state="pending"}' in text
    assert 'tminus_timers_fired_total{kind="notice"} 1.0' in text
    assert "tminus_timer_lateness_seconds_count 1.0" in text


def test_cancel_and_reschedule_are_recorded(serve_env: Serve) -> None:
    s = serve_env
    d = _schedule(s)
    out = s.tm("reschedule", d, "--at", "2027-01-10T03:00:00", check=0).stdout
    assert "rescheduled" in out and "2027-01-10 03:00 UTC" in out
    assert datetime.fromisoformat(s.status(d)["due_at"]) == T0 + timedelta(hours=1)
    bad = s.tm("reschedule", d, "--at", "2027-01-11T03:00:00")
    assert bad.returncode == 2 and "outside the plan's window" in bad.stderr
    out = s.tm("cancel", d, "--reason", "freeze", check=0).stdout
    assert "cancelled by alice: freeze" in out
    types = [e["type"] for e in s.events(d)]
    assert "deploy.rescheduled" in types and "deploy.cancelled" in types
    assert s.status(d)["stored_state"] == "aborted"
    again = s.tm("cancel", d)
    assert again.returncode != 0 and "only a scheduled deploy" in again.stderr


def test_schedule_refuses_a_past_time_with_exit_2(tmp_path: Path) -> None:
    s = Serve(tmp_path)
    write(s.cwd / "plan.yaml", PLAN)
    s.travel_to(T0 + timedelta(days=1))
    proc = s.tm("schedule", "plan.yaml")
    assert proc.returncode == 2 and "has passed" in proc.stderr and "Traceback" not in proc.stderr


def test_t0_is_read_in_the_window_timezone_and_kept_exactly(tmp_path: Path) -> None:
    """A time without zone is read in ``window.timezone`` and stored as that instant (the
    SQLite store keeps no offset: storing 02:00-05:00 as "02:00" made T-0 five hours early).

    Mutation tried: ``at.astimezone(UTC)`` removed from ``schedule`` → due_at 02:00 UTC."""
    s = Serve(tmp_path)
    write(s.cwd / "plan.yaml", PLAN.replace("timezone: UTC", "timezone: America/New_York"))
    s.travel_to(T0 - timedelta(days=3))
    out = s.tm("schedule", "plan.yaml", "--at", "2027-01-10T02:30", check=0).stdout
    assert "(2027-01-10 02:30 EST)" in out
    due = datetime.fromisoformat(s.status("countdown-1")["due_at"])
    assert due == datetime(2027, 1, 10, 7, 30, tzinfo=UTC)


def _op_plan() -> str:
    plan = PLAN.replace(
        "  on_critical: rollback\n", "  on_critical: operation\n  operation: restart\n"
    )
    plan = plan.replace(
        "  on_critical: operation\n", "  on_critical: operation\n  on_warn: ignore\n"
    )
    plan = plan.replace(
        "phases:\n",
        "operations:\n  restart:\n    description: Restart the importer.\n    steps:\n"
        "      - kind: run\n        name: restart\n        command: touch restarted.txt\n"
        "phases:\n",
        1,
    )
    # a phase verify can report a WARN: without one, `tminus check` rejects the watch_warn
    # rule of a watch told to ignore WARNs (it would never fire)
    plan = plan.replace(
        "        command: echo 2 > version.txt\n",
        "        command: echo 2 > version.txt\n    verify:\n      - source: command\n"
        "        name: version written\n        command: cat version.txt\n"
        '        expect: "== 2"\n',
        1,
    )
    return plan.replace(
        "    - when: after_success\n      after: 1h\n",
        "    - when: after_success\n      after: 1h\n    - when: watch_warn\n",
    )


def test_watch_critical_runs_the_plans_operation_and_a_warn_can_be_ignored(
    serve_env: Serve,
) -> None:
    """``on_critical: operation`` runs the operation (``tminus op run``) and records it;
    ``on_warn: ignore`` sends nothing for a WARN (a ``watch_warn`` rule exists).

    Mutations tried: the ``operation`` branch of ``fire._watch`` removed → restarted.txt never
    appears; ``on_warn`` not read (WARNs always notified) → a ``watch_warn`` notice is found."""
    s = serve_env
    write(s.cwd / "plan.yaml", _op_plan())
    write(s.cwd / "value.txt", "7\n")  # WARN (> 5), not CRITICAL
    s.travel_to(T0 - timedelta(days=3))
    s.tm("schedule", "plan.yaml", "--confirm", "Release notes reviewed", check=0)
    d = "countdown-1"
    s.tm("approve", d, "--role", "lead", "--as", "lena", check=0)
    s.start()
    s.travel_to(T0)
    s.wait_for("the deploy phase", lambda: _phase_state(s, d, 0) == "succeeded")
    s.travel_to(T0 + timedelta(hours=1, seconds=15))
    s.wait_for(
        "a WARN measurement", lambda: any(r["status"] == "warn" for r in _measurements(s, d))
    )
    assert not [
        e for e in s.events(d) if e["type"] == "notify" and e["data"]["when"] == "watch_warn"
    ]
    write(s.cwd / "value.txt", "12\n")
    s.travel_to(T0 + timedelta(hours=2, seconds=15))
    s.wait_for("the operation", lambda: (s.cwd / "restarted.txt").exists(), timeout=40)
    s.wait_for(
        "the operation recorded",
        lambda: any(e["type"] == "watch.operation" for e in s.events(d)),
    )
    assert s.status(d)["stored_state"] == "scheduled"  # not rolled back: the plan said operation


def test_check_rejects_a_watch_operation_that_is_not_there(tmp_path: Path) -> None:
    s = Serve(tmp_path)
    write(s.cwd / "plan.yaml", _op_plan().replace("operation: restart", "operation: restrat"))
    proc = s.tm("check", "plan.yaml")
    assert proc.returncode == 2 and "restrat" in proc.stdout + proc.stderr
    write(s.cwd / "plan.yaml", _op_plan().replace("  operation: restart\n", ""))
    proc = s.tm("check", "plan.yaml")
    assert proc.returncode == 2 and "on_critical: operation needs" in proc.stdout + proc.stderr
