"""A small real HTTP app for tests and benches: one version of a service behind a router.

    with AppProcess("stable") as stable, AppProcess("canary") as canary:
        canary.set(error_rate=1.0)            # every request now fails with 500
        canary.set(latency=0.2)               # ...or answers 200 ms late
        stable.url                            # http://127.0.0.1:PORT

It runs in its own process (``python -m tminus.testing.app --port P --version V``) so that
load on it does not compete with the test's event loop. HTTP/1.1 with keep-alive, enough for
a few thousand requests per second on one core.

- ``GET /<anything>``: ``200`` with the body ``<version>\\n`` and a header ``X-Version``; a
  request fails with ``500`` at the configured ``error_rate`` (a fraction, drawn per request)
  and is answered ``latency`` seconds late.
- ``GET /health``: ``200 ok`` (never fails, not counted).
- ``GET /metrics``: Prometheus text format: ``http_requests_total{version,code}`` and the
  histogram ``http_request_duration_seconds{version}`` (not counted).
- ``POST /_control?error_rate=F&latency=S``: change the fault; ``GET /_control``: JSON state
  (``requests`` answered, ``connections`` accepted since the start, ``codes``...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

__all__ = ["AppProcess", "free_port", "serve"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _State:
    def __init__(self, version: str) -> None:
        self.version = version
        self.error_rate = 0.0
        self.latency = 0.0
        self.counts: dict[int, int] = {}
        self.buckets = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0
        self.connections = 0  # accepted since the start (a proxy's keep-alive reuses them)

    def observe(self, code: int, seconds: float) -> None:
        self.counts[code] = self.counts.get(code, 0) + 1
        self.total += 1
        self.sum += seconds
        for i, le in enumerate(BUCKETS):
            if seconds <= le:
                self.buckets[i] += 1

    def metrics(self) -> str:
        v = self.version
        lines = [
            "# HELP http_requests_total Requests served, by status code.",
            "# TYPE http_requests_total counter",
        ]
        for code in sorted({200, 500} | set(self.counts)):  # both series exist from the start
            n = self.counts.get(code, 0)
            lines.append(f'http_requests_total{{version="{v}",code="{code}"}} {n}')
        lines += [
            "# HELP http_request_duration_seconds Request latency.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for le, n in zip(BUCKETS, self.buckets, strict=True):
            lines.append(f'http_request_duration_seconds_bucket{{version="{v}",le="{le}"}} {n}')
        lines.append(
            f'http_request_duration_seconds_bucket{{version="{v}",le="+Inf"}} {self.total}'
        )
        lines.append(f'http_request_duration_seconds_sum{{version="{v}"}} {self.sum:.6f}')
        lines.append(f'http_request_duration_seconds_count{{version="{v}"}} {self.total}')
        return "\n".join(lines) + "\n"


def _response(code: int, body: bytes, ctype: str, version: str, close: bool) -> bytes:
    reason = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}.get(code, "OK")
    head = (
        f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"X-Version: {version}\r\nConnection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode() + body


async def _handle(
    state: _State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    state.connections += 1
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            start = time.perf_counter()
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = [*lines[0].split(" "), "", "", ""][:3]
            headers = {}
            for line in lines[1:]:
                k, _, val = line.partition(":")
                if k:
                    headers[k.strip().lower()] = val.strip()
            length = int(headers.get("content-length") or 0)
            if length:
                await reader.readexactly(length)
            close = headers.get("connection", "").lower() == "close"
            url = urlsplit(target)
            path = url.path
            if path == "/health":
                writer.write(_response(200, b"ok\n", "text/plain", state.version, close))
            elif path == "/metrics":
                body = state.metrics().encode()
                writer.write(
                    _response(200, body, "text/plain; version=0.0.4", state.version, close)
                )
            elif path == "/_control":
                if method == "POST":
                    q = parse_qs(url.query)
                    if "error_rate" in q:
                        state.error_rate = float(q["error_rate"][0])
                    if "latency" in q:
                        state.latency = float(q["latency"][0])
                info = {
                    "version": state.version,
                    "error_rate": state.error_rate,
                    "latency": state.latency,
                    "requests": state.total,
                    "connections": state.connections,
                    "codes": {str(c): n for c, n in state.counts.items()},
                }
                body = json.dumps(info).encode()
                writer.write(_response(200, body, "application/json", state.version, close))
            else:
                if state.latency > 0:
                    await asyncio.sleep(state.latency)
                code = 500 if random.random() < state.error_rate else 200
                body = (state.version + "\n").encode() if code == 200 else b"injected failure\n"
                writer.write(_response(code, body, "text/plain", state.version, close))
                state.observe(code, time.perf_counter() - start)
            await writer.drain()
            if close:
                return
    except ConnectionError:
        return
    finally:
        writer.close()


async def serve(host: str, port: int, version: str) -> None:
    state = _State(version)
    server = await asyncio.start_server(
        lambda r, w: _handle(state, r, w), host, port, reuse_address=True, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


class AppProcess:
    """One app version in a child process on a free loopback port."""

    def __init__(self, version: str, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.version = version
        self.host = host
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 10.0) -> AppProcess:
        # Refuse a port someone already answers on: the readiness probe below would take that
        # other server's answer for ours.
        with socket.socket() as probe:
            if probe.connect_ex((self.host, self.port)) == 0:
                raise RuntimeError(f"app {self.version}: {self.address} is already in use")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tminus.testing.app",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--version",
                self.version,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"app {self.version} exited at start: {err[-500:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"app {self.version} did not listen on {self.address} in {timeout}s")

    def set(self, *, error_rate: float | None = None, latency: float | None = None) -> None:
        q = []
        if error_rate is not None:
            q.append(f"error_rate={error_rate}")
        if latency is not None:
            q.append(f"latency={latency}")
        req = urllib.request.Request(f"{self.url}/_control?{'&'.join(q)}", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()

    def info(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.url}/_control", timeout=5) as resp:
            data: dict[str, object] = json.loads(resp.read())
            return data

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> AppProcess:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--version", default="stable")
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.version))
    os._exit(0)


if __name__ == "__main__":
    main()
