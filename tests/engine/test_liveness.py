"""A dead runner is seen as dead, and what it left running is killed before anything else
(issue #11, findings 3 and 4): through the real CLI, on real stores."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm
from tminus.clock import now
from tminus.engine.liveness import HEARTBEAT_TIMEOUT_S, runner_liveness, shown_state
from tminus.procfs import pid_token
from tminus.store.store import Store

# A `run` step that is not idempotent: a shell (its own process group) that appends to
# marker.log every 0.2 s, with a `sleep 30` beside it, for 30 s.
ORPHAN_PLAN = """
name: orphan
environment: test
phases:
  - name: one
    steps:
      - kind: run
        name: write the marker
        command: "sleep 30 & for i in $(seq 150); do echo $i >> marker.log; sleep 0.2; done; wait"
"""

ENV = {"TMINUS_KILL_GRACE_S": "1"}


def _store(tm: Tm) -> Store:
    return Store(f"sqlite:///{tm.cwd}/.tminus/state.db")


def _start(tm: Tm, plan: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tminus", "run", str(plan), *args],
        cwd=tm.cwd,
        env={**tm.env, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _gone(pid: int) -> bool:
    """No such process, or only a zombie (the container's init may not reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _group_members(pgid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    f = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if f[2] == str(pgid) and f[0] not in ("Z", "X"):
                out.append(int(name))
    return out


def _kill_runner_in_step(tm: Tm) -> tuple[subprocess.Popen[str], list[dict[str, Any]], float]:
    """Run ORPHAN_PLAN, wait until its step writes the marker and its process group is
    recorded, kill -9 the runner. Returns it, the recorded groups, and the kill's time."""
    plan = tm.cwd / "p.yaml"
    plan.write_text(ORPHAN_PLAN)
    runner = _start(tm, plan)
    marker = tm.cwd / "marker.log"
    store = _store_when_ready(tm)
    try:
        deadline = time.monotonic() + 30
        procs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            procs = store.processes("orphan-1") if store else []
            if procs and marker.exists() and marker.stat().st_size > 4:
                break
            time.sleep(0.1)
            store = store or _store_when_ready(tm)
        assert procs, "the engine recorded no process group for the step"
    finally:
        runner.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        runner.wait()
        if store:
            store.close()
    assert all(_group_members(p["pid"]) for p in procs), "the orphan group must outlive it"
    return runner, procs, killed_at


def _store_when_ready(tm: Tm) -> Store | None:
    return _store(tm) if (tm.cwd / ".tminus" / "state.db").exists() else None


def _marker_stopped(tm: Tm) -> bool:
    marker = tm.cwd / "marker.log"
    size = marker.stat().st_size
    time.sleep(0.6)  # three marker periods
    return marker.stat().st_size == size


def test_a_killed_runner_shows_crashed_at_once(tm: Tm) -> None:
    """kill -9 of the runner in a long step: `status` says crashed within a second or two
    (text and json), names the step in flight, and `list` says crashed too; the stored state
    stays `running`.

    Mutation: make ``runner_liveness`` answer alive for a same-host pid that is gone
    (``return result(True, ...)`` there): status keeps saying running."""
    runner, _procs, killed_at = _kill_runner_in_step(tm)
    try:
        info = tm.json("status", "orphan-1")
        seen = time.monotonic() - killed_at
        assert info["state"] == "crashed", info
        print(f"crashed shown {seen:.2f} s after the kill (one `tminus status` start included)")
        assert seen < 3.0, f"crashed shown {seen:.1f}s after the kill"
        assert info["stored_state"] == "running"
        assert info["runner"]["pid"] == runner.pid and info["runner"]["alive"] is False
        assert [f["key"] for f in info["in_flight"]] == ["phase/0/step/0"]
        text = tm("status", "orphan-1", check=0).stdout
        assert "state: crashed (stored: running)" in text, text
        assert f"pid {runner.pid} is gone" in text, text
        assert "in flight when it died: write the marker [phase/0/step/0]" in text, text
        assert tm.json("list")[0]["state"] == "crashed"
        assert "crashed" in tm("list", check=0).stdout
    finally:
        tm("abort", "orphan-1", env=ENV)


@pytest.mark.parametrize("how", ["resume", "resume --force-unlock", "abort"])
def test_orphans_are_killed_before_anything_else(tm: Tm, how: str) -> None:
    """After kill -9 of the runner, its step's process group keeps writing the marker.
    `resume` (also with --force-unlock) and `abort` kill that group first: the marker stops
    growing, the processes are gone, and the console and the log say which group was killed
    before anything else happened.

    Mutation: drop the ``_kill_orphans`` call in ``runner.resume`` (or ``runner.abort``):
    the marker keeps growing while the resumed deploy goes on."""
    _runner, procs, _ = _kill_runner_in_step(tm)
    assert not _marker_stopped(tm), "the orphan must still be writing"
    cmd, *extra = how.split()
    proc = tm(cmd, "orphan-1", *extra, env=ENV)
    assert proc.returncode in (0, 1, 3), proc.stderr
    for p in procs:
        assert f"killed process group {p['pid']} on localhost" in proc.stderr, proc.stderr
        assert not _group_members(p["pid"]), "the orphan group must be gone"
        assert _gone(p["pid"])
    assert _marker_stopped(tm), "the marker must stop growing"
    log = tm.json("log", "orphan-1")
    types = [e["type"] for e in log]
    killed = types.index("runner.orphans_killed")
    after = types[killed + 1 :]
    assert types[killed - 1] == "step.started", types  # the dead runner's last event
    first = "deploy.resumed" if cmd == "resume" else "deploy.abort_requested"
    assert first in after, types
    assert str(procs[0]["pid"]) in log[killed]["message"]
    if cmd == "resume":
        # `run` steps are not idempotent: the deploy pauses on the step in flight.
        assert tm.json("status", "orphan-1")["state"] == "paused"
    else:
        assert tm.json("status", "orphan-1")["state"] == "aborted"
    assert _store(tm).processes("orphan-1") == []


def test_force_unlock_run_kills_the_dead_holders_orphans(tm: Tm) -> None:
    """`run --force-unlock` over a killed runner's lock: the takeover is printed, and the old
    deploy's orphan group is killed before the new deploy runs.

    Mutation: drop the ``_kill_orphans`` call in ``takeover._took_over``."""
    _runner, procs, _ = _kill_runner_in_step(tm)
    quick = tm.cwd / "q.yaml"
    quick.write_text(ORPHAN_PLAN.replace("sleep 30 & for i in $(seq 150)", "for i in 1"))
    proc = tm("run", str(quick), "--force-unlock", env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "took over the lock of deploy orphan-1" in proc.stderr, proc.stderr
    assert f"killed process group {procs[0]['pid']}" in proc.stderr, proc.stderr
    assert not _group_members(procs[0]["pid"])
    assert _marker_stopped(tm)
    for deploy in ("orphan-1", "orphan-2"):
        assert "runner.orphans_killed" in [e["type"] for e in tm.json("log", deploy)]


def _bare_deploy(store: Store, **values: Any) -> str:
    deploy_id, _ = store.create_deploy_locked(
        plan_name="orphan",
        environment="test",
        plan_path="p.yaml",
        plan_text=ORPHAN_PLAN,
        plan_hash="h",
        started_by="alice",
        overrides={},
    )
    store.set_deploy(deploy_id, **values)
    return deploy_id


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_runner_on_another_host_is_judged_by_its_heartbeat(
    tm: Tm, backend: str, request: pytest.FixtureRequest
) -> None:
    """A runner on another host: running while its heartbeat is fresh, crashed once it is
    older than HEARTBEAT_TIMEOUT_S; `--force-unlock` is refused, then allowed.

    Mutation: make ``runner_liveness`` ignore the heartbeat for another host (``return
    result(True, ...)``): the stale runner stays running and the takeover is refused."""
    url = (
        f"sqlite:///{tm.cwd}/.tminus/state.db"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    store = Store(url)
    try:
        d = _bare_deploy(store, state="running", host="build-7.elsewhere", runner_pid=1)
        store.heartbeat(d)
        assert tm.json("status", d, "--state", url)["state"] == "running"
        plan = tm.cwd / "p.yaml"
        plan.write_text(ORPHAN_PLAN.replace("sleep 30 & for i in $(seq 150)", "for i in 1"))
        refused = tm("run", str(plan), "--force-unlock", "--state", url)
        assert refused.returncode == 4 and "build-7.elsewhere" in refused.stderr
        # the age is whatever the CLI's start took on a loaded machine; it must be named
        assert re.search(r"heartbeat \d+(\.\d+)? s ago", refused.stderr), refused.stderr
        store.set_deploy(d, heartbeat_at=now() - timedelta(seconds=HEARTBEAT_TIMEOUT_S + 30))
        info = tm.json("status", d, "--state", url)
        assert info["state"] == "crashed" and info["runner"]["host"] == "build-7.elsewhere"
        assert "older than 20 s" in info["runner"]["why"]
        store.heartbeat(d)
        assert tm.json("status", d, "--state", url)["state"] == "running"
        store.set_deploy(d, heartbeat_at=now() - timedelta(seconds=60))
        taken = tm("run", str(plan), "--force-unlock", "--state", url)
        assert taken.returncode == 0, taken.stderr
        assert f"took over the lock of deploy {d}" in taken.stderr
    finally:
        store.close()


def test_liveness_rule_on_this_host(tmp_path: Path) -> None:
    """Same host: a live pid with its token is alive; a pid gone, a zombie, or a pid whose
    start time differs from the token (reused) is dead; a paused deploy has no runner."""
    host = socket.gethostname()
    child = subprocess.Popen(["sleep", "30"])
    try:
        token = pid_token(child.pid)
        assert token
        base = {"state": "running", "host": host, "runner_pid": child.pid, "heartbeat_at": None}
        assert runner_liveness(base | {"runner_token": token}).alive
        assert not runner_liveness(base | {"runner_token": str(int(token) + 1)}).alive
        assert not runner_liveness(base | {"state": "paused", "runner_token": token}).alive
        assert shown_state(base | {"runner_token": "1"}) == "crashed"
        assert shown_state(base | {"state": "paused", "runner_token": "1"}) == "paused"
        child.kill()
        time.sleep(0.1)  # a zombie until waited for
        assert not runner_liveness(base | {"runner_token": token}).alive
    finally:
        child.kill()
        child.wait()
    assert "is gone" in runner_liveness(base | {"runner_token": token}).why


def test_an_abort_after_success_says_so(tm: Tm) -> None:
    """An abort that arrives after the deploy succeeded says exactly that."""
    plan = tm.cwd / "p.yaml"
    plan.write_text(ORPHAN_PLAN.replace("sleep 30 & for i in $(seq 150)", "for i in 1"))
    tm("run", str(plan), check=0)
    proc = tm("abort", "orphan-1")
    assert proc.returncode == 2
    assert "the abort arrived after the deploy succeeded" in proc.stderr, proc.stderr
