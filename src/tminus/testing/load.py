"""A constant-rate HTTP load generator for tests and benches (open model: requests start on
schedule whether or not earlier ones finished, so a slow server cannot slow the load down).

    result = await constant_rate("http://127.0.0.1:8080/", rps=500, duration=5.0)
    result.failed, result.by_body, result.percentile(99)

Each request is recorded with its start time (``time.time()``), status (``None`` for a
connection error), latency and body, so a test can say which requests failed and when.
Connections are kept alive and reused (a small pool per generator).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["LoadResult", "Request", "constant_rate"]


@dataclass
class Request:
    started: float  # time.time()
    status: int | None
    latency: float
    body: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 400


@dataclass
class LoadResult:
    requests: list[Request] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.requests)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.requests if not r.ok)

    @property
    def by_body(self) -> Counter[str]:
        return Counter(r.body.strip() for r in self.requests if r.ok)

    def failures(self) -> list[Request]:
        return [r for r in self.requests if not r.ok]

    def percentile(self, p: float) -> float:
        lat = sorted(r.latency for r in self.requests)
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, round(p / 100 * (len(lat) - 1)))]


class _Stale(Exception):
    """A reused keep-alive connection was closed by the server before any byte of an answer:
    the request was never processed, and a client may send it again (RFC 9110 §9.2.2; what
    browsers, curl and urllib3 do for idempotent requests)."""


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = False

    async def request(self, raw: bytes, timeout: float) -> tuple[int, str]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout
            )
        assert self.reader is not None and self.writer is not None
        reused, self.used = self.used, True
        try:
            self.writer.write(raw)
            try:
                head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
            except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                partial = getattr(exc, "partial", b"")
                if reused and not partial:
                    raise _Stale from None
                raise
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            length = 0
            close = False
            for line in lines[1:]:
                k, _, v = line.partition(":")
                k = k.strip().lower()
                if k == "content-length":
                    length = int(v)
                elif k == "connection" and v.strip().lower() == "close":
                    close = True
            body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
            if close:
                self.close()
            return status, body.decode(errors="replace")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def constant_rate(
    url: str,
    *,
    rps: float,
    duration: float,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    stop: asyncio.Event | None = None,
) -> LoadResult:
    """Send ``rps`` requests per second to ``url`` for ``duration`` seconds (or until ``stop``)."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    raw = f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\n{extra}\r\n".encode()
    idle: list[_Conn] = []
    result = LoadResult()
    tasks: set[asyncio.Task[None]] = set()

    async def one(started: float) -> None:
        conn = idle.pop() if idle else _Conn(host, port)
        t0 = time.perf_counter()
        try:
            try:
                status, body = await conn.request(raw, timeout)
            except _Stale:  # closed while idle (a graceful reload): send it again, once
                conn = _Conn(host, port)
                status, body = await conn.request(raw, timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
            result.requests.append(Request(started, None, time.perf_counter() - t0, ""))
            return
        result.requests.append(Request(started, status, time.perf_counter() - t0, body))
        if conn.writer is not None:
            idle.append(conn)

    interval = 1.0 / rps
    start = time.perf_counter()
    n = 0
    while True:
        due = start + n * interval
        now = time.perf_counter()
        if due - start >= duration or (stop is not None and stop.is_set()):
            break
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(one(time.time()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    for c in idle:
        c.close()
    return result
