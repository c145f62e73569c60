"""LocalHost.run stops its whole process group on cancellation and on timeout: SIGTERM first
(a trap runs), SIGKILL after the grace, grandchildren included (issue #11)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest

from tminus import work
from tminus.hosts.local import LocalHost


def procs_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state != "Z":
            out.append(int(name))
    return out


def cancel_run(command: str, after: float = 0.5) -> float:
    """Start ``command``, cancel its task after ``after`` s; how long the cancellation took."""

    async def go() -> float:
        task = asyncio.ensure_future(LocalHost().run(command))
        await asyncio.sleep(after)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    return asyncio.run(go())


@pytest.fixture
def tag() -> str:
    return f"600.{uuid.uuid4().int % 10**6:06d}"  # a unique `sleep` argument


def test_cancel_sends_sigterm_first_and_kills_the_grandchildren(tmp_path: Path, tag: str) -> None:
    """Mutation: stop_group sending SIGKILL instead of SIGTERM first: the trap never runs
    (no marker). Today's code (SIGKILL at once) fails the same way."""
    marker = tmp_path / "term"
    took = cancel_run(
        f"trap 'echo term > {marker}; exit 143' TERM; bash -c 'sleep {tag}' & sleep {tag}; wait"
    )
    assert marker.read_text() == "term\n"
    assert procs_with(f"sleep {tag}") == []
    assert took < 2, took


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace(
    monkeypatch: pytest.MonkeyPatch, tag: str
) -> None:
    """Mutation: no SIGKILL after the grace in stop_group: the sleep survives (and the
    cancellation takes the whole 10 s bound)."""
    monkeypatch.setenv("TMINUS_KILL_GRACE_S", "1")
    took = cancel_run(f"trap '' TERM; sleep {tag} & sleep {tag}; wait")
    assert procs_with(f"sleep {tag}") == []
    assert 0.9 < took < 3, took


def test_timeout_terms_then_kills_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tag: str
) -> None:
    """Mutation: the timeout path skipping stop_group: the trap does not run, sleeps survive."""
    monkeypatch.setenv("TMINUS_KILL_GRACE_S", "1")
    marker = tmp_path / "term"
    r = asyncio.run(
        LocalHost().run(
            f"trap 'echo term > {marker}' TERM; (trap '' TERM; sleep {tag}) & sleep {tag}; wait",
            timeout=0.5,
        )
    )
    assert r.timed_out and not r.ok
    assert marker.read_text() == "term\n"  # SIGTERM first…
    assert procs_with(f"sleep {tag}") == []  # …and the one that ignored it was SIGKILLed
    assert r.duration < 3


def test_a_second_cancel_during_the_grace_does_not_skip_the_kill(
    monkeypatch: pytest.MonkeyPatch, tag: str
) -> None:
    """Mutation: ``await stop()`` without ``work.shielded``: the second cancel interrupts the
    grace wait and the sleep that ignores SIGTERM is left running."""
    monkeypatch.setenv("TMINUS_KILL_GRACE_S", "1")

    async def go() -> None:
        task = asyncio.ensure_future(LocalHost().run(f"trap '' TERM; sleep {tag}"))
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert procs_with(f"sleep {tag}") == []


def test_the_group_is_reported_to_the_sink(tag: str) -> None:
    seen: list[work.ProcRecord] = []

    class Sink:
        def started(self, rec: work.ProcRecord) -> None:
            seen.append(rec)

    work.set_sink(Sink())
    try:
        r = asyncio.run(LocalHost().run("echo $$; sleep 0.2"))
    finally:
        work.set_sink(None)
    assert [(s.host, s.pid) for s in seen] == [("localhost", int(r.stdout))]
    assert seen[0].token.isdigit()
