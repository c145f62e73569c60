"""``kind: http``: a request plus expectations on status, body and latency."""

from __future__ import annotations

import time
from typing import ClassVar

import httpx

from tminus.metrics.http import status_ok
from tminus.plan.interpolate import Resolver
from tminus.plan.steps import HttpStep
from tminus.steps.base import Compensation, StepContext, StepOutcome

__all__ = ["KIND", "HttpKind"]


class HttpKind:
    kind: ClassVar[str] = "http"

    async def execute(self, step: HttpStep, ctx: StepContext) -> StepOutcome:
        r = ctx.resolver
        url = r.resolve(step.url)
        headers = {k: r.resolve(v) for k, v in step.headers.items()}
        timeout = step.timeout.total_seconds() if step.timeout else 30.0
        json_body = r.resolve_data(step.json_body) if step.json_body is not None else None
        start = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                resp = await client.request(
                    step.method,
                    url,
                    headers=headers,
                    content=r.resolve(step.body) if step.body is not None else None,
                    json=json_body,
                )
        except httpx.HTTPError as exc:
            return StepOutcome(False, "", r.mask(f"{type(exc).__name__}: {exc}"))
        latency = time.monotonic() - start
        body = r.mask(resp.text)
        arts = {"status": resp.status_code, "latency_ms": round(latency * 1000, 1)}
        summary = f"HTTP {resp.status_code} in {latency * 1000:.0f}ms"
        ctx.log(summary)
        exp = step.expect
        if not status_ok(resp.status_code, exp.status):
            return StepOutcome(
                False, body[-2000:], f"{summary}, expected {exp.status or '2xx'}", arts
            )
        if exp.body_contains is not None and r.resolve(exp.body_contains) not in resp.text:
            return StepOutcome(False, body[-2000:], f"body lacks {exp.body_contains!r}", arts)
        if exp.max_latency is not None and latency > exp.max_latency.total_seconds():
            return StepOutcome(
                False, body[-2000:], f"{summary}, slower than {exp.max_latency}", arts
            )
        return StepOutcome(True, body[-2000:], None, arts)

    def compensation(self, step: HttpStep, ctx: StepContext) -> Compensation | None:
        return None

    def describe(self, step: HttpStep, resolver: Resolver) -> str:
        return resolver.mask(f"{step.method} {resolver.resolve(step.url)}")


KIND = HttpKind()
