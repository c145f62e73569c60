"""Deploys run by ``tminus serve``: each in a worker process running the same engine as the
CLI (``tminus resume DEPLOY`` or ``tminus rollback DEPLOY``), so a deploy continued by the
server and one continued by an operator are the same thing to ``status``, ``log``,
``approve`` and ``abort`` (the runner, its lock and heartbeat are the engine's own).

Why a process per run and not a task in the server's loop: a step that blocks (a driver
without async, a CPU-bound comparison) cannot stall the timers of every other deploy, a crash
in a step takes down one deploy and not the server, and the two cores of a small machine are
both used.

A worker dies with its server: it is started with ``PR_SET_PDEATHSIG`` = SIGKILL, so a server
killed with ``kill -9`` leaves no runner behind, and another server takes the deploy over by
the engine's crash rules. On SIGTERM the server sends SIGTERM to its workers, which finish
the step in flight and pause (:data:`tminus.states.HANDOVER_REASON`).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["WORKER_ARGV", "Worker", "Workers"]

#: The command that runs the tminus CLI in a worker, and the one of a warm worker
#: (:mod:`tminus.cli.warm`). The testing seam replaces both with itself so that workers
#: share a test's clock (:mod:`tminus.testing.seam`).
WORKER_ARGV: list[str] = [sys.executable, "-m", "tminus"]
WARM_ARGV: list[str] = [sys.executable, "-m", "tminus.cli.warm"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


@dataclass
class Worker:
    deploy_id: str
    argv: list[str]
    log: Path
    proc: asyncio.subprocess.Process | None = None
    done: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Workers:
    """The worker processes of one server, by deploy."""

    def __init__(self, state_url: str, log_dir: Path) -> None:
        self.state_url = state_url
        self.log_dir = log_dir
        self.running: dict[str, Worker] = {}
        self._warm: asyncio.subprocess.Process | None = None

    def busy(self, deploy_id: str) -> bool:
        return deploy_id in self.running

    async def warm_up(self) -> None:
        """Have one warm worker ready (the engine imported, waiting for its run)."""
        if self._warm is not None and self._warm.returncode is None:
            return
        self._warm = await asyncio.create_subprocess_exec(
            *WARM_ARGV,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            env=self._env(),
        )

    def _env(self) -> dict[str, str]:
        return {**os.environ, "TMINUS_OPERATOR": "tminus-serve"}

    async def start(
        self, deploy_id: str, args: list[str], operator: str = "tminus-serve"
    ) -> Worker:
        """Run ``tminus ARGS --state URL --as OPERATOR`` for ``deploy_id`` (the server's own
        runs as ``tminus-serve``, an API request's as its person): in the warm worker when
        one is ready (then warm the next), else in a new process."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{deploy_id}.log"
        cli_args = [*args, "--state", self.state_url, "--as", operator]
        w = Worker(deploy_id, [*WORKER_ARGV, *cli_args], log)
        with open(log, "ab") as fh:
            fh.write(f"--- {' '.join(args)}\n".encode())
        warm, self._warm = self._warm, None
        if warm is not None and warm.returncode is None and warm.stdin is not None:
            try:
                warm.stdin.write(json.dumps({"argv": cli_args, "log": str(log)}).encode() + b"\n")
                await warm.stdin.drain()
                warm.stdin.close()
                w.proc = warm
            except (BrokenPipeError, ConnectionResetError):
                w.proc = None
        if w.proc is None:
            with open(log, "ab") as fh:
                w.proc = await asyncio.create_subprocess_exec(
                    *w.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=fh,
                    stderr=fh,
                    preexec_fn=_die_with_parent,
                    env=self._env(),
                )
        self.running[deploy_id] = w
        asyncio.get_running_loop().create_task(self._reap(w))
        await self.warm_up()
        return w

    async def close_warm(self) -> None:
        """The server stops: the warm worker ends without running anything."""
        warm, self._warm = self._warm, None
        if warm is None or warm.returncode is not None:
            return
        if warm.stdin is not None:
            warm.stdin.close()
        try:
            await asyncio.wait_for(warm.wait(), 10)
        except TimeoutError:
            warm.kill()
            await warm.wait()

    async def _reap(self, w: Worker) -> None:
        assert w.proc is not None
        code = await w.proc.wait()
        self.running.pop(w.deploy_id, None)
        if not w.done.done():
            w.done.set_result(code)

    def last_line(self, w: Worker) -> str:
        """The worker's last output line (its final message)."""
        try:
            lines = w.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def signal_all(self, sig: int) -> None:
        for w in list(self.running.values()):
            if w.proc is not None and w.proc.returncode is None:
                try:
                    w.proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    async def wait_all(self, timeout: float) -> bool:
        """Wait for every worker to end, up to ``timeout`` seconds; True when none is left."""
        pending = [w.done for w in self.running.values()]
        if not pending:
            return True
        _done, left = await asyncio.wait(pending, timeout=timeout)
        return not left
