"""A private redis-server on a free loopback port, in its own temp directory, for flag store
tests (so that tests never touch, and never need, a Redis the machine may run).

    with RedisServer(password="s3cret") as rs:
        rs.url                       # redis://:s3cret@127.0.0.1:PORT/0
        rs.store_config(prefix="t:") # the plan's targets.flag_stores entry for it

No persistence (``--save '' --appendonly no``), so nothing is written but its log.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tminus.testing._service import find_binary, stop_process
from tminus.testing.app import free_port

__all__ = ["RedisServer", "RedisUnavailable", "find_redis_server"]

_CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server")


class RedisUnavailable(RuntimeError):
    """redis-server cannot be started here; the message says why and how to fix it."""


def find_redis_server() -> str:
    return find_binary("redis-server", _CANDIDATES, "redis-server", RedisUnavailable)


class RedisServer:
    """redis-server on 127.0.0.1:``port``, optionally with ``requirepass``."""

    def __init__(self, *, password: str | None = None) -> None:
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.dir: Path | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def store_config(self, **extra: Any) -> dict[str, Any]:
        """The ``targets.flag_stores`` entry (a plain dict, as written in a plan)."""
        return {"kind": "redis", "url": self.url, **extra}

    def start(self, wait: float = 10.0) -> RedisServer:
        binary = find_redis_server()
        self._tmp = tempfile.TemporaryDirectory(prefix="tminus-redis-")
        self.dir = Path(self._tmp.name)
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.dir / "redis.log"),
            "--daemonize",
            "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RedisUnavailable(f"redis-server exited with {code}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(64):
                    return self
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"redis-server did not answer on {self.port} in {wait:g}s")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if self._tmp is not None:
            with contextlib.suppress(Exception):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
