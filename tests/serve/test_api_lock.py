"""An API action that finds the plan's lock held (issue #17): a real contention, not a mock.

A ``tminus run`` of the same plan (another deploy, its runner alive, its step held until the
test lets it go) holds the (plan, environment) lock in the server's own store. The API's
rollback of the first deploy runs in a worker of the server, which exits 4 (locked): the
request gets a 409 with the CLI's last line (its hint: wait, or ``--force-unlock``), or a 202
when the loaded machine took longer than ``EARLY_S`` to start the worker, and the server does
**not** try again behind the person's back (the run's key starts with ``api:``; only the
server's own runs are retried every ``LOCKED_RETRY``). After the holder has ended and the
clock has travelled well past the retry delay, the first deploy is still *succeeded* and its
undo never ran.

Mutation tried (on a copy of ``src/`` put first on ``PYTHONPATH``): ``"api:"`` taken out of
the keys that are not retried (``serve/driving.py``, ``_watch_worker``): the server recorded
``serve.locked`` in the first deploy's log and the test failed there.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.serve.conftest import Serve, token, write

PLAN = """
name: lockplan
environment: prod
phases:
  - name: one
    steps:
      - kind: run
        command: "if [ -e hold ]; then touch held; while [ ! -e go ]; do sleep 0.1; done; fi"
        undo: [{kind: run, command: "echo undone >> effects.log"}]
"""


@pytest.mark.timeout(900)  # a shared 2-core machine: the steps are real, the wait long
def test_api_rollback_refused_while_another_run_holds_the_lock(serve_env: Serve) -> None:
    s = serve_env
    write(s.cwd / "plan.yaml", PLAN)
    alice = token(s, "alice")
    s.tm("access", "grant", "alice", "operator")
    first = s.tm("run", "plan.yaml", check=0)
    assert first.returncode == 0, first.stdout + first.stderr
    assert s.status("lockplan-1")["state"] == "succeeded"
    _, port = s.start()

    (s.cwd / "hold").touch()
    holder = subprocess.Popen(
        [sys.executable, "-m", "tminus.testing.seam", "run", "plan.yaml"],
        cwd=s.cwd,
        env=s.tm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        s.wait_for("the second run to hold the lock", lambda: (s.cwd / "held").exists(), 120)
        assert s.status("lockplan-2")["state"] == "running"
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {alice}"},
            timeout=120,
        ) as c:
            r = c.post("/api/v1/deploys/lockplan-1/rollback", json={"reason": "contention"})
        # the worker's refusal is the answer (or, when the loaded machine takes longer than
        # EARLY_S to start the worker, a 202 and the refusal in the server's log)
        assert r.status_code in (409, 202), r.text
        if r.status_code == 409:
            assert "lock" in r.json()["detail"], r.text  # the CLI's last line says why
        s.wait_for(
            "the worker to be refused the lock",
            lambda: "lockplan-1: worker exit 4" in s.log(),
            timeout=120,
        )
        assert s.status("lockplan-1")["state"] == "succeeded"
    finally:
        (s.cwd / "go").touch()
        out, _ = holder.communicate(timeout=120)
    assert holder.returncode == 0, out
    assert s.status("lockplan-2")["state"] == "succeeded"

    # the lock is free now; far past the retry delay, nothing ran the rollback
    s.travel_to(datetime.now(UTC) + timedelta(minutes=5))
    s.travel_to(datetime.now(UTC) + timedelta(minutes=10))
    deadline = time.monotonic() + 15  # a retry would start within a tick or two
    while time.monotonic() < deadline:
        types = [e["type"] for e in s.events("lockplan-1")]
        assert "serve.locked" not in types, types
        assert not (s.cwd / "effects.log").exists(), "the rollback was retried and ran"
        time.sleep(0.5)
    assert s.status("lockplan-1")["state"] == "succeeded"
    assert s.log().count("lockplan-1: worker pid") == 1  # one worker: the refused one
