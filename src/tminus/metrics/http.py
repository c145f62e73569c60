"""``source: http``: a request; the value is the latency in seconds (or ``metric: status`` /
``body``). The status must match ``status`` (default: any 2xx)."""

from __future__ import annotations

import time
from typing import ClassVar

import httpx

from tminus.metrics.base import CheckContext, Measurement
from tminus.plan.checks import HttpCheck

__all__ = ["PROVIDER", "HttpProvider", "status_ok"]


def status_ok(status: int, expected: int | list[int] | None) -> bool:
    if expected is None:
        return 200 <= status < 300
    if isinstance(expected, int):
        return status == expected
    return status in expected


class HttpProvider:
    source: ClassVar[str] = "http"

    async def measure(self, check: HttpCheck, ctx: CheckContext) -> Measurement:
        r = ctx.resolver
        url = r.resolve(check.url)
        headers = {k: r.resolve(v) for k, v in check.headers.items()}
        timeout = check.timeout.total_seconds() if check.timeout else 10.0
        start = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                resp = await client.request(
                    check.method,
                    url,
                    headers=headers,
                    content=r.resolve(check.body) if check.body else None,
                )
        except httpx.HTTPError as exc:
            return Measurement(error=r.mask(f"{type(exc).__name__}: {exc}"))
        latency = time.monotonic() - start
        body = resp.text
        ok = status_ok(resp.status_code, check.status)
        msg = f"HTTP {resp.status_code} in {latency * 1000:.0f}ms"
        if check.body_contains is not None and r.resolve(check.body_contains) not in body:
            ok = False
            msg += f"; body lacks {check.body_contains!r}"
        metric = check.metric or "latency"
        value: object = {"latency": latency, "status": resp.status_code, "body": body}.get(
            metric, latency
        )
        return Measurement(
            value=value,
            values={"latency": latency, "status": resp.status_code},
            ok=ok,
            message=msg,
        )


PROVIDER = HttpProvider()
