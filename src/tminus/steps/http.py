"""``kind: http``: a request plus expectations on status, body and latency, sent and judged by
:func:`tminus.http.request` (as the ``http`` check source is, so one default timeout)."""

from __future__ import annotations

from typing import ClassVar

from tminus.http import request
from tminus.plan.steps import HttpStep
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "HttpKind"]


class HttpKind(StepKindBase):
    kind: ClassVar[str] = "http"

    async def execute(self, step: HttpStep, ctx: StepContext) -> StepOutcome:
        r = ctx.resolver
        exp = step.expect
        res = await request(
            r,
            method=step.method,
            url=step.url,
            headers=step.headers,
            timeout=step.timeout,
            body=step.body,
            json_body=step.json_body,
            status=exp.status,
            body_contains=exp.body_contains,
            max_latency=exp.max_latency,
        )
        if isinstance(res, str):
            return StepOutcome(False, "", res)
        body = r.mask(res.text)[-2000:]
        arts = {"status": res.status, "latency_ms": round(res.latency * 1000, 1)}
        ctx.log(res.summary)
        if not res.status_ok:
            return StepOutcome(False, body, f"{res.summary}, expected {exp.status or '2xx'}", arts)
        if not res.body_ok:
            return StepOutcome(False, body, f"body lacks {exp.body_contains!r}", arts)
        if not res.fast_enough:
            return StepOutcome(False, body, f"{res.summary}, slower than {exp.max_latency}", arts)
        return StepOutcome(True, body, None, arts)

    def compensation(self, step: HttpStep, ctx: StepContext) -> Compensation | None:
        return None


KIND = HttpKind()
