"""The one HTTP request-and-expect: the ``http`` step kind and the ``http`` check source both
send through :func:`request`, so they share the method, headers, bodies, the timeout (the
check's or step's ``timeout``, else :data:`DEFAULT_TIMEOUT_S`) and the expectations (status,
``body_contains``, ``max_latency``); each reports the result in its own terms."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from tminus.plan.interpolate import Resolver

__all__ = ["DEFAULT_TIMEOUT_S", "HttpResponse", "request", "status_ok"]

#: How long one request waits when its check or step names no ``timeout``: the one default
#: of ``source: http`` and ``kind: http`` (docs/plan-format.md says so under both).
DEFAULT_TIMEOUT_S = 30.0


def status_ok(status: int, expected: int | list[int] | None) -> bool:
    if expected is None:
        return 200 <= status < 300
    if isinstance(expected, int):
        return status == expected
    return status in expected


@dataclass(frozen=True)
class HttpResponse:
    """A response and how it met the expectations (each True when none was asked)."""

    status: int
    text: str  # unmasked: the caller masks what it shows or stores
    latency: float  # seconds
    status_ok: bool
    body_ok: bool
    fast_enough: bool

    @property
    def summary(self) -> str:
        return f"HTTP {self.status} in {self.latency * 1000:.0f}ms"


async def request(
    r: Resolver,
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    timeout: timedelta | None,
    body: str | None = None,
    json_body: Any = None,
    status: int | list[int] | None = None,
    body_contains: str | None = None,
    max_latency: timedelta | None = None,
) -> HttpResponse | str:
    """Send one request (``${…}`` in the URL, headers, body and ``body_contains`` resolved)
    and judge it; a request that got no response is its masked error message."""
    seconds = timeout.total_seconds() if timeout else DEFAULT_TIMEOUT_S
    resolved_url = r.resolve(url)
    resolved_headers = {k: r.resolve(v) for k, v in headers.items()}
    json_data = r.resolve_data(json_body) if json_body is not None else None
    start = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=seconds) as client:
            resp = await client.request(
                method,
                resolved_url,
                headers=resolved_headers,
                content=r.resolve(body) if body is not None else None,
                json=json_data,
            )
    except httpx.HTTPError as exc:
        return r.mask(f"{type(exc).__name__}: {exc}")
    latency = time.monotonic() - start
    return HttpResponse(
        status=resp.status_code,
        text=resp.text,
        latency=latency,
        status_ok=status_ok(resp.status_code, status),
        body_ok=body_contains is None or r.resolve(body_contains) in resp.text,
        fast_enough=max_latency is None or latency <= max_latency.total_seconds(),
    )
