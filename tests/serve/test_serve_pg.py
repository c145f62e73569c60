"""Two ``tminus serve`` processes on one PostgreSQL store (issue #15 item 6): every timer fires
once between them, and when one is killed with ``kill -9`` mid-deploy the other takes the
deploy over (the engine's crash rules) and finishes it within 30 s. Real servers, real
workers, the machine's PostgreSQL (a fresh database per test); the clock is the real one.

Mutations tried:
- ``claim_timers`` without its lease condition and ``FOR UPDATE SKIP LOCKED`` *and*
  ``finish_timer`` without its lease check → some ``notify`` events recorded twice
  (``test_two_servers...`` fails). Either guard alone holds: with exclusive claims removed,
  the server that lost the row finds its lease gone and records nothing (tried: passes);
- ``_die_with_parent`` made a no-op (no PR_SET_PDEATHSIG) → the killed server's worker lives
  on as an orphan runner and finishes the deploy itself; no server resumes it
  (``test_kill_9...`` fails: "no resume after the kill").
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.serve.conftest import Serve, write
from tests.serve.test_serve import PLAN
from tminus.store.store import Store


def test_two_servers_fire_500_timers_exactly_once(tmp_path: Path, pg_url: str) -> None:
    s = Serve(tmp_path, state=pg_url)
    try:
        write(tmp_path / "plan.yaml", PLAN)
        s.travel_to(datetime(2027, 1, 10, 2, 0, tzinfo=UTC) - timedelta(days=5))
        s.tm("schedule", "plan.yaml", check=0)
        travel_back = datetime.now(UTC)  # the real clock again: the timers are due now
        s.travel_to(travel_back)
        store = Store(pg_url)
        start = datetime.now(UTC) + timedelta(seconds=4)
        store.add_timers(
            "countdown-1",
            [
                {
                    "key": f"bulk:{i}",
                    "kind": "notice",
                    "due_at": start + timedelta(milliseconds=6 * i),
                    "data": {"rule": 0, "shown": f"bulk {i}"},
                }
                for i in range(500)
            ],
        )
        s.start("a")
        s.start("b")
        s.wait_for(
            "500 timers fired",
            lambda: (
                sum(
                    1
                    for t in store.timers("countdown-1")
                    if t["key"].startswith("bulk:") and t["state"] == "done"
                )
                == 500
            ),
            timeout=90,
        )
        keys = Counter(
            str(e["key"])
            for e in store.events("countdown-1", types=("notify",))
            if str(e["key"]).startswith("bulk:")
        )
        assert len(keys) == 500 and set(keys.values()) == {1}, keys.most_common(3)
        owners = Counter(
            str(t["lease_owner"])
            for t in store.timers("countdown-1")
            if t["key"].startswith("bulk:")
        )
        assert sum(owners.values()) == 500
        print("timers fired per server:", dict(owners))
        store.close()
    finally:
        s.stop_all()


SLOW_PLAN = """\
tminus: 1
name: takeover
environment: test
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: run
        name: slow idempotent step
        command: sleep 4 && echo x >> first.log
        idempotent: true
      - kind: run
        name: second step
        command: touch second.done
"""


def test_kill_9_of_the_server_running_a_deploy_the_other_finishes_it(
    tmp_path: Path, pg_url: str
) -> None:
    s = Serve(tmp_path, state=pg_url)
    try:
        write(tmp_path / "plan.yaml", SLOW_PLAN)
        s.tm("schedule", "plan.yaml", "--at", "+3s", check=0)
        procs = {"a": s.start("a")[0], "b": s.start("b")[0]}
        store = Store(pg_url)
        d = "takeover-1"

        def holder() -> str | None:
            rows = [t for t in store.timers(d) if t["kind"] == "drive"]
            running = store.deploy(d)["state"] == "running"
            return str(rows[0]["lease_owner"]) if rows and running else None

        owner = s.wait_for("the deploy running under one server", holder, timeout=40)
        pid = int(owner.split(":")[1])
        victim = next(name for name, p in procs.items() if p.pid == pid)
        survivor = "b" if victim == "a" else "a"
        os.kill(pid, signal.SIGKILL)
        killed_at = datetime.now(UTC)
        procs[victim].wait(timeout=10)
        s.wait_for(
            "the survivor to finish the deploy",
            lambda: store.deploy(d)["state"] == "succeeded",
            timeout=30,
        )
        took = datetime.now(UTC) - killed_at
        assert took < timedelta(seconds=30)
        assert (tmp_path / "second.done").exists()
        resumed = [e for e in store.events(d, types=("deploy.resumed",)) if e["ts"] > killed_at]
        assert resumed, "no resume after the kill"
        survivor_log = s.log(survivor)
        assert f"{d}: worker pid" in survivor_log and "takeover" in survivor_log
        starts = (s.log("a") + s.log("b")).count(f"{d}: worker pid")
        assert starts == 2  # the first runner (killed with its server) and the takeover
        print(f"finished {took.total_seconds():.1f} s after kill -9")
        store.close()
    finally:
        s.stop_all()
