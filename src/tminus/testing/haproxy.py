"""A real HAProxy on a free loopback port, in its own temp directory, for router tests.

    with AppProcess("stable") as s, AppProcess("canary") as c:
        pools = {"stable": [s.address], "canary": [c.address]}
        with HaproxyServer(pools=pools, cookie="canary") as hap:
            hap.url                      # http://127.0.0.1:PORT
            hap.router_config()          # the plan's targets.routers entry for it
            hap.restart()                # stop, then start again from the (rewritten) config

HAProxy runs in the foreground (``haproxy -db -f TMP/haproxy.cfg``) as our child, with
``stats socket TMP/admin.sock level admin`` and ``maxconn 4000`` (HAProxy sizes its file
descriptors from maxconn; the machine's limit is 20000). Pool servers are named
``<pool><n>`` (``stable1``, ``canary1``...). With ``cookie``, the config is the one
docs/routers.md asks of a user: a map file read by ``use_backend`` and one backend per pool.
``http_reuse`` sets the defaults' ``http-reuse`` (``bench/canary.py`` part (c) compares
HAProxy's default, ``safe``, with ``always``).
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

__all__ = ["HaproxyServer", "HaproxyUnavailable", "find_haproxy"]

_CANDIDATES = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")


class HaproxyUnavailable(RuntimeError):
    """HAProxy cannot be started here; the message says why and how to fix it."""


def find_haproxy() -> str:
    return find_binary("haproxy", _CANDIDATES, "haproxy", HaproxyUnavailable, "HAProxy")


class HaproxyServer:
    """HAProxy in front of ``pools`` (pool → server addresses) on 127.0.0.1:``port``."""

    def __init__(
        self,
        pools: dict[str, list[str]],
        *,
        cookie: str | None = None,
        cookie_value: str | None = None,
        backend: str = "app",
        weights: dict[str, int] | None = None,
        root: Path | None = None,
        http_reuse: str | None = None,
    ) -> None:
        self.pools = pools
        self.http_reuse = http_reuse  # the defaults' ``http-reuse`` (None: HAProxy's, safe)
        self.cookie = cookie
        self.cookie_value = cookie_value  # only this value of the cookie is routed
        self.backend = backend
        first = next(iter(pools))
        self.initial = weights or {p: (100 if p == first else 0) for p in pools}
        self.port = free_port()
        self.root = root
        self.binary = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root

    @property
    def config(self) -> Path:
        return self.dir / "haproxy.cfg"

    @property
    def socket(self) -> Path:
        return self.dir / "admin.sock"

    @property
    def cookie_map(self) -> Path:
        return self.dir / "cookie-route.map"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def server_names(self) -> dict[str, list[str]]:
        """Pool → HAProxy server names (``<pool><n>``)."""
        return {p: [f"{p}{i}" for i in range(1, len(a) + 1)] for p, a in self.pools.items()}

    def router_config(self, **extra: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "kind": "haproxy",
            "socket": str(self.socket),
            "backend": self.backend,
            "config": str(self.config),
            "haproxy": self.binary,
            "pools": self.server_names(),
        }
        if self.cookie:
            cfg["cookie"] = (
                {"name": self.cookie, "value": self.cookie_value}
                if self.cookie_value is not None
                else self.cookie
            )
            cfg["cookie_map"] = str(self.cookie_map)
        cfg.update(extra)
        return cfg

    def write_config(self) -> None:
        names = self.server_names()
        lines = [
            "# tminus test HAProxy (tminus.testing.haproxy)",
            "global",
            "    maxconn 4000",
            f"    stats socket {self.socket} mode 600 level admin",
            "    stats timeout 30s",
            "",
            "defaults",
            "    mode http",
            "    timeout connect 5s",
            "    timeout client 30s",
            "    timeout server 30s",
            "    timeout http-keep-alive 30s",
            *([f"    http-reuse {self.http_reuse}"] if self.http_reuse else []),
            "",
            "frontend www",
            f"    bind 127.0.0.1:{self.port}",
        ]
        if self.cookie and self.cookie_value is not None:
            m, c = str(self.cookie_map), self.cookie
            lines.append(
                f"    use_backend %[req.cook({c}),map({m})]"
                f" if {{ req.cook({c}),map({m}) -m found }}"
            )
        elif self.cookie:
            m = str(self.cookie_map)
            lines.append(
                f"    use_backend %[str(route),map({m})] if {{ req.cook({self.cookie}) -m found }}"
                f" {{ str(route),map({m}) -m found }}"
            )
        lines += [f"    default_backend {self.backend}", "", f"backend {self.backend}"]
        lines.append("    balance roundrobin")
        for pool, addrs in self.pools.items():
            for name, addr in zip(names[pool], addrs, strict=True):
                w = 1 if self.initial.get(pool, 0) > 0 else 0
                lines.append(f"    server {name} {addr} weight {w}  # pool {pool}")
        if self.cookie:
            for pool, addrs in self.pools.items():
                lines += ["", f"backend {self.backend}_{pool}", "    balance roundrobin"]
                for name, addr in zip(names[pool], addrs, strict=True):
                    lines.append(f"    server {name} {addr}")
        self.config.write_text("\n".join(lines) + "\n")
        if self.cookie and not self.cookie_map.exists():
            self.cookie_map.write_text("")

    def start(self, wait: float = 10.0) -> HaproxyServer:
        self.binary = find_haproxy()
        if self.root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tminus-haproxy-")
            self.root = Path(self._tmp.name)
        self.write_config()
        try:
            self.spawn()
            self.wait_ready(wait)
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self) -> None:
        with open(self.dir / "haproxy.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-db", "-f", str(self.config)],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def wait_ready(self, wait: float = 10.0) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise HaproxyUnavailable(
                    f"haproxy exited with {self.proc.returncode}: {self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.socket))
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            time.sleep(0.02)
        raise HaproxyUnavailable(
            f"haproxy did not listen on {self.port} in {wait:g}s: {self.log_tail()}"
        )

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self.dir / "haproxy.log").read_text(errors="replace").strip().splitlines()
            return " | ".join(lines[-5:]) or "(empty log)"
        return "(no log)"

    def kill(self) -> None:
        stop_process(self.proc, group=True)
        self.proc = None

    def restart(self, wait: float = 10.0) -> None:
        """Stop HAProxy and start it again from its config file as it is now on disk."""
        self.kill()
        self.socket.unlink(missing_ok=True)
        self.spawn()
        self.wait_ready(wait)

    def stop(self) -> None:
        self.kill()
        if self._tmp is not None:
            with contextlib.suppress(Exception):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> HaproxyServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
