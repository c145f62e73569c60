"""A real nginx on a free loopback port, in its own temp directory, for router tests.

    with AppProcess("stable") as s, AppProcess("canary") as c:
        pools = {"stable": [s.address], "canary": [c.address]}
        with NginxServer(pools=pools, cookie="canary") as ngx:
            ngx.url                      # http://127.0.0.1:PORT
            ngx.router_config()          # the plan's targets.routers entry for it

Everything lives under the temp directory (``-p TMP -c TMP/nginx.conf``): pid file, error log,
temp paths; nothing needs root-owned paths. nginx runs in the foreground (``daemon off``) with
its master process as our child, so ``nginx -s reload`` (what the router runs) works through
the pid file. The config contains exactly what docs/routers.md asks of a user's config: an
``include`` of the router's file inside ``http {}``, a ``proxy_pass`` to the upstream (or to
``$tminus_<upstream>_route`` with a cookie), and ``proxy_http_version 1.1;`` with
``proxy_set_header Connection "";`` so that the upstream ``keepalive`` the router writes
reuses connections.

:class:`NginxApp` is a stand-in app for rates the Python app (``tminus.testing.app``) cannot
serve (bench/canary.py part (c) at thousands of requests per second): an nginx answering
every request ``200 <version>\n`` itself, with keep-alive.
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

from tminus.routers.nginx import DEFAULT_KEEPALIVE, render_include, route_variable
from tminus.testing._service import find_binary, stop_process
from tminus.testing.app import free_port

__all__ = ["NginxApp", "NginxServer", "NginxUnavailable", "find_nginx"]

_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


class NginxUnavailable(RuntimeError):
    """nginx cannot be started here; the message says why and how to fix it."""


def find_nginx() -> str:
    return find_binary("nginx", _CANDIDATES, "nginx", NginxUnavailable)


class NginxServer:
    """nginx in front of ``pools`` (pool → server addresses) on 127.0.0.1:``port``."""

    def __init__(
        self,
        pools: dict[str, list[str]],
        *,
        cookie: str | None = None,
        cookie_value: str | None = None,
        upstream: str = "backend",
        weights: dict[str, int] | None = None,
        keepalive_timeout: str = "75s",
        keepalive: int = DEFAULT_KEEPALIVE,
        workers: int = 1,
        root: Path | None = None,
    ) -> None:
        """``keepalive_timeout``: the client side's; ``keepalive``: idle upstream connections
        per worker (the router's ``keepalive``); ``workers``: ``worker_processes``."""
        self.pools = pools
        self.cookie = cookie
        self.cookie_value = cookie_value  # only this value of the cookie is routed
        self.upstream = upstream
        first = next(iter(pools))
        self.initial = weights or {p: (100 if p == first else 0) for p in pools}
        self.keepalive_timeout = keepalive_timeout
        self.keepalive = keepalive
        self.worker_processes = workers
        self.port = free_port()
        self.root = root
        self.binary = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # --- paths ----------------------------------------------------------------------------
    @property
    def dir(self) -> Path:
        assert self.root is not None, "not started"
        return self.root

    @property
    def config(self) -> Path:
        return self.dir / "nginx.conf"

    @property
    def include(self) -> Path:
        return self.dir / "tminus-upstream.conf"

    @property
    def pid_file(self) -> Path:
        return self.dir / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.dir / "error.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def router_config(self, **extra: Any) -> dict[str, Any]:
        """The ``targets.routers`` entry (a plain dict, as written in a plan) for this nginx."""
        cfg: dict[str, Any] = {
            "kind": "nginx",
            "include_file": str(self.include),
            "config": str(self.config),
            "prefix": str(self.dir),
            "nginx": self.binary,
            "upstream": self.upstream,
            "pools": {p: list(a) for p, a in self.pools.items()},
        }
        if self.keepalive != DEFAULT_KEEPALIVE:
            cfg["keepalive"] = self.keepalive
        if self.cookie:
            cfg["cookie"] = (
                {"name": self.cookie, "value": self.cookie_value}
                if self.cookie_value is not None
                else self.cookie
            )
        cfg.update(extra)
        return cfg

    # --- life cycle -----------------------------------------------------------------------
    def write_config(self) -> None:
        d = self.dir
        target = f"${route_variable(self.upstream)}" if self.cookie else self.upstream
        self.config.write_text(
            "\n".join(
                [
                    "# tminus test nginx (tminus.testing.nginx)",
                    "daemon off;",
                    "master_process on;",
                    f"worker_processes {self.worker_processes};",
                    f"pid {self.pid_file};",
                    f"error_log {self.error_log} notice;",
                    "events { worker_connections 4096; }",
                    "http {",
                    "    access_log off;",
                    f"    client_body_temp_path {d}/tmp/client_body;",
                    f"    proxy_temp_path {d}/tmp/proxy;",
                    f"    fastcgi_temp_path {d}/tmp/fastcgi;",
                    f"    uwsgi_temp_path {d}/tmp/uwsgi;",
                    f"    scgi_temp_path {d}/tmp/scgi;",
                    f"    keepalive_timeout {self.keepalive_timeout};",
                    f"    include {self.include};",
                    "    server {",
                    f"        listen 127.0.0.1:{self.port};",
                    "        location / {",
                    f"            proxy_pass http://{target};",
                    "            proxy_http_version 1.1;",
                    '            proxy_set_header Connection "";',
                    "        }",
                    "    }",
                    "}",
                    "",
                ]
            )
        )

    def start(self, wait: float = 10.0) -> NginxServer:
        self.binary = find_nginx()
        if self.root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="tminus-nginx-")
            self.root = Path(self._tmp.name)
        self.dir.chmod(0o755)  # workers run as an unprivileged user when we are root
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.include.write_text(
            render_include(
                "test",
                self.upstream,
                self.pools,
                self.initial,
                self.cookie,
                keepalive=self.keepalive,
            )
        )
        self.write_config()
        try:
            self.spawn()
            self.wait_ready(wait)
        except BaseException:
            self.stop()
            raise
        return self

    def spawn(self) -> None:
        with open(self.dir / "nginx.stderr", "ab") as err:
            self.proc = subprocess.Popen(
                [self.binary, "-p", str(self.dir), "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )

    def wait_ready(self, wait: float = 10.0) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise NginxUnavailable(
                    f"nginx exited with {self.proc.returncode}: {self.log_tail()}"
                )
            if self.pid_file.exists():
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
                ):
                    return
            time.sleep(0.02)
        raise NginxUnavailable(
            f"nginx did not listen on {self.port} in {wait:g}s: {self.log_tail()}"
        )

    def log_tail(self) -> str:
        parts = []
        for f in (self.dir / "nginx.stderr", self.error_log):
            with contextlib.suppress(OSError):
                parts += f.read_text(errors="replace").strip().splitlines()[-5:]
        return " | ".join(parts) or "(no log)"

    def workers(self) -> list[int]:
        """Worker pids (children of the master)."""
        if self.proc is None:
            return []
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(x) for x in text.split()]

    def stop(self) -> None:
        stop_process(self.proc, group=True)
        self.proc = None
        if self._tmp is not None:
            with contextlib.suppress(Exception):
                self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NginxServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class NginxApp(NginxServer):
    """A stand-in app version: nginx answering ``200 <version>\\n`` to every request (keep-alive
    on, ``workers`` processes), for loads beyond the Python app's few thousand per second."""

    def __init__(self, version: str, *, workers: int = 1) -> None:
        super().__init__({"app": ["127.0.0.1:9"]}, workers=workers)
        self.version = version

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> None:
        d = self.dir
        self.config.write_text(
            "\n".join(
                [
                    f"# tminus test app {self.version!r} (tminus.testing.nginx.NginxApp)",
                    "daemon off;",
                    "master_process on;",
                    f"worker_processes {self.worker_processes};",
                    f"pid {self.pid_file};",
                    f"error_log {self.error_log} warn;",
                    "events { worker_connections 4096; }",
                    "http {",
                    "    access_log off;",
                    f"    client_body_temp_path {d}/tmp/client_body;",
                    "    keepalive_requests 1000000;",
                    "    keepalive_timeout 75s;",
                    "    server {",
                    f"        listen 127.0.0.1:{self.port} backlog=4096;",
                    "        default_type text/plain;",
                    f'        location / {{ return 200 "{self.version}\\n"; }}',
                    "    }",
                    "}",
                    "",
                ]
            )
        )
