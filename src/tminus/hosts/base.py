"""The Host protocol: remote execution looks like subprocess (asyncssh's ``conn.run``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = ["CompletedRun", "Host", "LineSink"]

LineSink = Callable[[str, str], None]  # (stream, line)


@dataclass
class CompletedRun:
    """The result of a command on a host."""

    host: str
    command: str
    exit_status: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out


class Host(Protocol):
    """A machine commands run on: :class:`~tminus.hosts.local.LocalHost` or
    :class:`~tminus.hosts.ssh.SshHost`. ``input`` is fed to the command's stdin (bytes, e.g. a
    tar stream); ``become`` overrides the host's own ``become`` for this command."""

    name: str

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
    ) -> CompletedRun: ...

    async def put(self, local_path: str | os.PathLike[str], remote_path: str) -> None: ...

    async def sha256(self, remote_path: str) -> str | None: ...
