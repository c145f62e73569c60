"""The local machine as a Host: commands run as subprocesses in their own process group,
output streamed line by line. On timeout or cancellation the whole group gets SIGTERM, then
SIGKILL after :func:`tminus.work.grace_s`, and the process is reaped before ``run`` returns or
the cancellation goes on; each group is reported to :func:`tminus.work.track`. It has the same file
operations as :class:`~tminus.hosts.ssh.SshHost` (``put``, ``sha256``, stdin ``input``), so a
plan can deploy to ``localhost`` (or a ``local: true`` host) without SSH."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import shutil
import time
import uuid
from collections.abc import Mapping

from tminus import work
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
        input: bytes | None = None,
        become: bool | str | None = None,
    ) -> CompletedRun:
        full_env = dict(os.environ)
        full_env.update(env or {})
        start = time.monotonic()
        stdin = asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE
        user = "root" if become is True else (become or None)
        if user:
            # Like SshHost: sudo never prompts, and the command runs under sh -c.
            script = command if isinstance(command, str) else shlex.join(command)
            if env:
                script = "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items()) + script
            command = ["sudo", "-n", "-u", user, "--", "sh", "-c", script]
        if isinstance(command, str):
            proc = await asyncio.create_subprocess_shell(
                command,
                stdin=stdin,
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
                stdin=stdin,
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

        async def feed() -> None:
            if proc.stdin is None or input is None:
                return
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(input)
                await proc.stdin.drain()
            proc.stdin.close()

        pumps = asyncio.gather(
            pump(proc.stdout, out, "stdout"), pump(proc.stderr, err, "stderr"), feed()
        )
        token = work.proc_token(proc.pid)
        work.track(work.ProcRecord(self.name, proc.pid, token))

        async def stop() -> int:
            """SIGTERM the group, SIGKILL after the grace, then reap the process."""
            await work.stop_group(proc.pid, token)
            status = await proc.wait()
            pumps.cancel()
            with contextlib.suppress(BaseException):
                await pumps
            return status

        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(pumps), timeout)
            status = await proc.wait()
        except TimeoutError:
            timed_out = True
            status = await work.shielded(stop())
        except asyncio.CancelledError:
            # Stop the work before the cancellation goes on, even if cancelled again meanwhile.
            await work.shielded(stop())
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

    async def put(self, local_path: str | os.PathLike[str], remote_path: str) -> None:
        """Copy a file to a temporary name beside ``remote_path``, then rename it (atomic)."""

        def copy() -> None:
            parent, name = os.path.split(remote_path)
            tmp = os.path.join(parent, f".{name or 'upload'}.tminus-{uuid.uuid4().hex[:12]}")
            try:
                shutil.copyfile(local_path, tmp)
                os.replace(tmp, remote_path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

        await asyncio.to_thread(copy)

    async def sha256(self, remote_path: str) -> str | None:
        """The SHA-256 of a file (hex), or None when it does not exist."""

        def digest() -> str | None:
            h = hashlib.sha256()
            try:
                with open(remote_path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            except FileNotFoundError:
                return None
            return h.hexdigest()

        return await asyncio.to_thread(digest)
