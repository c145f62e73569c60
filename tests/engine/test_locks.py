"""Locks under contention, through the real CLI, on real SQLite and PostgreSQL stores:
concurrent runs leave exactly one deploy, and ``--force-unlock`` never takes a live runner's
lock (issue #11, findings 5 and 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm

# A step that holds the lock until the file `stop` appears (or 30 s).
HOLD_PLAN = """
name: slow
environment: test
phases:
  - name: one
    steps:
      - kind: run
        name: nap
        command: "for i in $(seq 300); do [ -f stop ] && exit 0; sleep 0.1; done"
        idempotent: true
"""

# Children for the race: tminus imported first, then every child runs the CLI at the same
# instant (they spin until the round's barrier file appears), once per round.
RACER = r"""
import contextlib, io, os, sys, time
from pathlib import Path
import tminus.cli.app, tminus.engine.runner, tminus.store.store  # imported before the race
work = Path(sys.argv[1]); plan = sys.argv[2]; urls = sys.argv[3:]
(work / f"ready.{os.getpid()}").touch()
for n, url in enumerate(urls):
    go = work / f"go.{n}"
    while not go.exists():
        time.sleep(0.0005)
    err = io.StringIO()
    sys.argv = ["tminus", "run", plan, "--state", url, "-q"]
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            tminus.cli.app.main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    tmp = work / f"tmp.{n}.{os.getpid()}"
    tmp.write_text(f"{code}\n{err.getvalue()}")
    tmp.rename(work / f"result.{n}.{os.getpid()}")  # whole, or not there
"""

RACE_PLAN = """
name: race
environment: test
phases:
  - name: one
    steps:
      - kind: run
        name: hold the lock a moment
        command: "sleep 1.2"
"""


def _race(tm: Tm, urls: list[str], procs: int) -> list[list[tuple[int, str]]]:
    work = tm.cwd / "race"
    work.mkdir()
    plan = tm.cwd / "race.yaml"
    plan.write_text(RACE_PLAN)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(work), str(plan), *urls],
            cwd=tm.cwd,
            env=tm.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    try:
        deadline = time.monotonic() + 90
        while len(list(work.glob("ready.*"))) < procs:
            assert time.monotonic() < deadline, "children did not start"
            time.sleep(0.02)
        rounds = []
        for n in range(len(urls)):
            (work / f"go.{n}").touch()
            while len(list(work.glob(f"result.{n}.*"))) < procs:
                assert time.monotonic() < deadline, f"round {n} did not finish"
                time.sleep(0.02)
            results = []
            for p in sorted(work.glob(f"result.{n}.*")):
                code, _, err = p.read_text().partition("\n")
                results.append((int(code), err))
            rounds.append(results)
        for c in children:
            assert c.wait(timeout=30) == 0, c.stderr.read() if c.stderr else ""
        return rounds
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()


def _check_rounds(tm: Tm, urls: list[str], rounds: list[list[tuple[int, str]]]) -> None:
    for url, results in zip(urls, rounds, strict=True):
        codes = sorted(code for code, _ in results)
        assert codes == [0] + [4] * (len(results) - 1), results
        for code, err in results:
            if code == 4:  # the loser names the holder: deploy, person, host, pid
                assert "locked by deploy race-1: held by alice on" in err, err
                assert "(pid " in err, err
                assert "concurrently" not in err, err
        rows = tm.json("list", "--state", url)
        assert [(r["id"], r["state"]) for r in rows] == [("race-1", "succeeded")], rows


def test_concurrent_runs_leave_one_deploy_sqlite(tm: Tm) -> None:
    """8 `tminus run` of one plan at the same instant on a brand-new SQLite store, 4 rounds:
    exactly one runs, the others exit 4 naming it, `tminus list` shows one deploy.

    Mutation: in ``runner.start_loaded``, create the deploy with ``create_deploy`` and take
    the lock afterwards with ``acquire_lock`` (two transactions, as before): losers leave
    `failed` deploys behind. (Before the fix, the first opens also raced on the schema.)"""
    urls = [f"sqlite:///{tm.cwd}/s{n}/state.db" for n in range(4)]
    _check_rounds(tm, urls, _race(tm, urls, procs=8))


@pytest.fixture
def pg_urls(request: pytest.FixtureRequest) -> list[str]:
    return [request.getfixturevalue("pg_url")] + [_fresh_pg(request) for _ in range(2)]


def _fresh_pg(request: pytest.FixtureRequest) -> str:
    import uuid

    import psycopg

    from tests.conftest import PG_ADMIN

    name = f"tminus_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    request.addfinalizer(drop)
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def test_concurrent_runs_leave_one_deploy_postgres(tm: Tm, pg_urls: list[str]) -> None:
    """The same on brand-new PostgreSQL databases, 3 rounds of 8.

    Mutation: as for SQLite (two transactions): losers leave `failed` deploys, or say
    "locked concurrently" without naming the holder."""
    _check_rounds(tm, pg_urls, _race(tm, pg_urls, procs=8))


def _start(tm: Tm, plan: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tminus", "run", str(plan), *args],
        cwd=tm.cwd,
        env=tm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_running(tm: Tm, deploy: str) -> dict[str, Any]:
    deadline = time.time() + 30
    while time.time() < deadline:
        rows = tm.json("list")
        if rows and rows[0]["id"] == deploy and rows[0]["state"] == "running":
            return dict(rows[0])
        time.sleep(0.1)
    raise AssertionError(f"{deploy} did not start")


def test_force_unlock_is_refused_while_the_holder_runs(tm: Tm) -> None:
    """`run --force-unlock` and `resume --force-unlock` against a live runner exit 4 naming
    it (deploy, person, host, pid, heartbeat age); the live deploy then succeeds alone.

    Mutation: in ``Store._judge_holder``, let ``force`` through whatever ``holder_check``
    says (``if live is not None and False``): the takeover happens, two deploys run."""
    plan = tm.cwd / "p.yaml"
    plan.write_text(HOLD_PLAN)
    first = _start(tm, plan, "--reason", "nightly release")
    try:
        _wait_running(tm, "slow-1")
        taken = tm("run", str(plan), "--force-unlock", env={"TMINUS_OPERATOR": "bob"})
        assert taken.returncode == 4, taken.stderr
        err = taken.stderr
        assert "--force-unlock refused" in err, err
        for part in ("slow-1", "alice", os.uname().nodename, f"pid {first.pid}", "heartbeat"):
            assert part in err, (part, err)
        again = tm("resume", "slow-1", "--force-unlock", env={"TMINUS_OPERATOR": "bob"})
        assert again.returncode == 4 and "--force-unlock refused" in again.stderr, again.stderr
        assert f"pid {first.pid}" in again.stderr
        (tm.cwd / "stop").touch()
        assert first.wait(timeout=30) == 0, first.stderr.read() if first.stderr else ""
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    rows = tm.json("list")
    assert [(r["id"], r["state"]) for r in rows] == [("slow-1", "succeeded")]
    types = [e["type"] for e in tm.json("log", "slow-1")]
    assert "lock.lost" not in types


def test_force_unlock_takes_a_killed_runners_lock_and_says_so(tm: Tm) -> None:
    """After kill -9 of the holder's runner, `run --force-unlock` takes the lock, prints the
    takeover on the console (stderr) and records it in both logs.

    Mutation: drop the ``_took_over`` call in ``runner.start_loaded``: nothing is printed."""
    plan = tm.cwd / "p.yaml"
    plan.write_text(HOLD_PLAN)
    first = _start(tm, plan)
    try:
        _wait_running(tm, "slow-1")
    finally:
        first.kill()
        first.wait()
    assert tm("run", str(plan), env={"TMINUS_OPERATOR": "bob"}).returncode == 4
    (tm.cwd / "stop").touch()
    taken = tm("run", str(plan), "--force-unlock", env={"TMINUS_OPERATOR": "bob"})
    assert taken.returncode == 0, taken.stderr
    assert "took over the lock of deploy slow-1" in taken.stderr, taken.stderr
    assert f"pid {first.pid} is gone" in taken.stderr, taken.stderr
    rows = tm.json("list")
    assert [r["id"] for r in rows] == ["slow-2", "slow-1"], rows  # the refused run left none
    assert "lock.taken_over" in [e["type"] for e in tm.json("log", "slow-2")]
    assert "lock.lost" in [e["type"] for e in tm.json("log", "slow-1")]


def test_a_refused_force_unlock_prints_an_error_and_a_hint(tm: Tm) -> None:
    """A refused run prints one error and a hint (how to stop the holder), no traceback."""
    plan = tm.cwd / "p.yaml"
    plan.write_text(HOLD_PLAN)
    first = _start(tm, plan)
    try:
        _wait_running(tm, "slow-1")
        proc = tm("run", str(plan), "--force-unlock")
        assert proc.returncode == 4
        assert "Traceback" not in proc.stderr
        assert "hint: --force-unlock takes only a dead runner's lock" in proc.stderr
        assert "tminus abort slow-1" in proc.stderr
    finally:
        (tm.cwd / "stop").touch()
        first.wait(timeout=30)
