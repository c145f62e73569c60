"""tminus.work: cancelled threads stop their process groups, reap kills a dead runner's
orphans (never a reused pid), a pg_dump backup cancelled mid-way leaves nothing (issue #11)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.hosts.test_local_cancel import procs_with
from tminus import work


def _tag() -> str:
    return f"600.{uuid.uuid4().int % 10**6:06d}"


def test_in_thread_cancel_stops_the_groups_it_spawned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutation: ``_stop`` not calling stop_group for the scope's processes: the thread stays
    in ``wait()`` and the cancellation ends in WorkNotStopped, the sleep alive."""
    monkeypatch.setenv("TMINUS_KILL_GRACE_S", "1")
    tag = _tag()
    seen: list[work.ProcRecord] = []

    class Sink:
        def started(self, rec: work.ProcRecord) -> None:
            seen.append(rec)

    def job() -> int:
        return work.popen(["sh", "-c", f"trap '' TERM; sleep {tag}"]).wait()

    async def go() -> float:
        task = asyncio.ensure_future(work.in_thread(job))
        await asyncio.sleep(0.5)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    work.set_sink(Sink())
    try:
        took = asyncio.run(go())
    finally:
        work.set_sink(None)
    assert procs_with(f"sleep {tag}") == []
    assert 0.9 < took < 3, took
    assert len(seen) == 1 and seen[0].host == "localhost" and seen[0].token


def test_work_that_cannot_be_stopped_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMINUS_KILL_GRACE_S", "0")

    def stubborn() -> None:
        time.sleep(12)  # no cooperative check, nothing to cancel

    async def go() -> None:
        task = asyncio.ensure_future(work.in_thread(stubborn))
        await asyncio.sleep(0.2)
        task.cancel()
        await task

    with pytest.raises(work.WorkNotStopped, match="stubborn"):
        asyncio.run(go())


def test_reap_kills_a_dead_runners_orphan_but_not_a_reused_pid() -> None:
    """Mutation: ``_alive`` ignoring the token: the wrong-token record kills the sleep too
    (the first reap returns a line)."""
    tag = _tag()
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, time; from tminus import work; "
            f"p = work.popen(['sleep', '{tag}']); "
            "print(json.dumps([p.pid, work.proc_token(p.pid)]), flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert runner.stdout is not None
    pid, token = json.loads(runner.stdout.readline())
    runner.kill()  # kill -9: the sleep is orphaned, still running
    runner.wait()
    assert procs_with(f"sleep {tag}") == [pid]

    wrong = work.ProcRecord("localhost", pid, str(int(token) + 1))
    assert asyncio.run(work.reap([wrong])) == []
    assert procs_with(f"sleep {tag}") == [pid]

    lines = asyncio.run(work.reap([work.ProcRecord("localhost", pid, token)]))
    assert lines == [f"killed process group {pid} on localhost (sleep {tag})"]
    assert procs_with(f"sleep {tag}") == []
    assert asyncio.run(work.reap([work.ProcRecord("localhost", pid, token)])) == []


def test_cancelled_pg_dump_backup_leaves_no_process_and_no_backup(
    pg_url: str, tmp_path: Path
) -> None:
    """pg_dump and the checksum session both wait on a lock held elsewhere; the backup is
    cancelled. Mutation: no ``cancel_on_cancel`` in the postgres driver's ``_connect``: the
    checksum query keeps waiting and the cancellation ends in WorkNotStopped (today's code,
    ``asyncio.to_thread``, leaves pg_dump running)."""
    from tminus.backups.postgres import PostgresDriver

    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
    holder = psycopg.connect(pg_url)
    holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
    dbname = pg_url.rsplit("/", 1)[1]

    async def go() -> float:
        task = asyncio.ensure_future(work.in_thread(PostgresDriver().backup, pg_url, tmp_path))
        for _ in range(100):
            await asyncio.sleep(0.1)
            if any("pg_dump" in _cmd(p) for p in procs_with(dbname)):
                break
        assert not task.done()
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    try:
        took = asyncio.run(go())
    finally:
        holder.close()
    assert took < 2, took
    assert [p for p in procs_with(dbname) if "pg_dump" in _cmd(p)] == []
    assert list(tmp_path.iterdir()) == []  # the partial directory is gone, no backup made


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
