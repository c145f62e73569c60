"""SshHost stops the REMOTE process group when a run is cancelled or times out (SIGTERM over a
second channel, SIGKILL after the grace), before the cancellation goes on; ``kill_group``
kills a recorded group for ``work.reap`` (issue #11). sshd runs on this machine, so the
remote processes are visible in /proc."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hosts.test_local_cancel import procs_with
from tminus import work
from tminus.hosts.pool import HostPool
from tminus.testing.sshd import SshdFleet


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tminus-ssh-cancel-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _tag() -> str:
    return f"600.{uuid.uuid4().int % 10**6:06d}"


def test_cancel_terms_then_kills_the_remote_group(
    fleet: SshdFleet, shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote shell with a trap, a background grandchild ignoring SIGTERM and a foreground
    sleep; its task is cancelled. Mutation: ``stop()`` not calling ``self._kill`` (or today's
    fire-and-forget SIGKILL): the sleeps are still there when the cancellation arrives."""
    monkeypatch.setenv("TMINUS_KILL_GRACE_S", "1")
    tag, marker = _tag(), shared_dir / "term"
    seen: list[work.ProcRecord] = []

    class Sink:
        def started(self, rec: work.ProcRecord) -> None:
            seen.append(rec)

    async def go() -> float:
        async with HostPool(fleet.targets()) as pool:
            h = pool.ssh("h9")
            task = asyncio.ensure_future(
                h.run(
                    f"trap 'echo term > {marker}' TERM; (trap '' TERM; sleep {tag}) & "
                    f"sleep {tag}; wait"
                )
            )
            await asyncio.sleep(0.7)
            assert procs_with(f"sleep {tag}")  # the shell and its sleeps
            start = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            took = time.monotonic() - start
            assert procs_with(f"sleep {tag}") == []  # gone before the cancellation went on
            assert (await h.run("echo still usable")).ok
            return took

    work.set_sink(Sink())
    try:
        took = asyncio.run(go())
    finally:
        work.set_sink(None)
    assert marker.read_text() == "term\n"  # SIGTERM came first
    assert 0.9 < took < 4, took
    assert [r.host for r in seen][:1] == ["h9"] and seen[0].token.isdigit()


def test_timeout_kills_the_remote_group_gracefully(
    fleet: SshdFleet, shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-host timeout of the ssh step (``host.run(timeout=)``). Mutation: the kill
    script sending KILL at once: no trap output."""
    monkeypatch.setenv("TMINUS_KILL_GRACE_S", "1")
    tag, marker = _tag(), shared_dir / "term"

    async def go() -> None:
        async with HostPool(fleet.targets()) as pool:
            r = await pool.ssh("h10").run(
                f"trap 'echo term > {marker}' TERM; sleep {tag} & sleep {tag}; wait", timeout=0.5
            )
            assert r.timed_out and r.duration < 4
            assert procs_with(f"sleep {tag}") == []

    asyncio.run(go())
    assert marker.read_text() == "term\n"


def test_kill_group_for_reap_checks_the_token(fleet: SshdFleet) -> None:
    """Mutation: the kill script's ``ours`` check returning true always: the wrong-token call
    kills the sleep (and returns True). ``reap`` checks two records of one group in turn: side
    by side, the wrong one could find the leader just killed and the group still ending, and
    claim it too (a line twice; seen once in CI)."""
    tag = _tag()
    seen: list[work.ProcRecord] = []

    class Sink:
        def started(self, rec: work.ProcRecord) -> None:
            seen.append(rec)

    async def go() -> None:
        async with HostPool(fleet.targets()) as pool:
            h = pool.ssh("h8")
            task = asyncio.ensure_future(h.run(f"sleep {tag}"))
            await asyncio.sleep(0.7)
            rec = seen[0]
            wrong = work.ProcRecord(rec.host, rec.pid, str(int(rec.token) + 1))
            assert await h.kill_group(wrong) is False
            assert procs_with(f"sleep {tag}")  # spared
            lines = await work.reap([wrong, rec], remote=h.kill_group)
            assert lines == [f"killed process group {rec.pid} on h8"]
            assert procs_with(f"sleep {tag}") == []
            r = await task
            assert not r.ok

    work.set_sink(Sink())
    try:
        asyncio.run(go())
    finally:
        work.set_sink(None)
