"""The local machine as a Host: commands run as subprocesses in their own process group,
output streamed line by line, the whole group killed on timeout."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Mapping

from tminus.hosts.base import CompletedRun, LineSink

__all__ = ["MAX_CAPTURE", "LocalHost"]

#: Bytes of stdout/stderr kept per command (the tail); everything is still streamed.
MAX_CAPTURE = 256 * 1024


class LocalHost:
    name = "localhost"

    async def run(
        self,
        command: str | list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        on_line: LineSink | None = None,
    ) -> CompletedRun:
        full_env = dict(os.environ)
        full_env.update(env or {})
        start = time.monotonic()
        if isinstance(command, str):
            proc = await asyncio.create_subprocess_shell(
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=full_env,
                start_new_session=True,
                executable="/bin/bash" if os.path.exists("/bin/bash") else None,
            )
            shown = command
        else:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=full_env,
                start_new_session=True,
            )
            shown = " ".join(command)
        out: list[str] = []
        err: list[str] = []

        async def pump(stream: asyncio.StreamReader | None, sink: list[str], name: str) -> None:
            if stream is None:
                return
            size = 0
            while True:
                raw = await stream.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace")
                sink.append(line)
                size += len(line)
                while size > MAX_CAPTURE and len(sink) > 1:
                    size -= len(sink.pop(0))
                if on_line is not None:
                    on_line(name, line.rstrip("\n"))

        pumps = asyncio.gather(pump(proc.stdout, out, "stdout"), pump(proc.stderr, err, "stderr"))
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(pumps), timeout)
            status = await proc.wait()
        except TimeoutError:
            timed_out = True
            _kill_group(proc.pid)
            status = await proc.wait()
            pumps.cancel()
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            raise
        return CompletedRun(
            host=self.name,
            command=shown,
            exit_status=status,
            stdout="".join(out),
            stderr="".join(err),
            timed_out=timed_out,
            duration=time.monotonic() - start,
        )


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
