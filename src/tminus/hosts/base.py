"""The Host protocol: remote execution looks like subprocess (asyncssh's ``conn.run``)."""

from __future__ import annotations

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
    name: str

    async def run(
        self,
        command: str | list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        on_line: LineSink | None = None,
    ) -> CompletedRun: ...
