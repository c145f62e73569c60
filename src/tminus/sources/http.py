"""``source: http``: a request; the value is the latency in seconds (or ``metric: status`` /
``body``). The status must match ``status`` (default: any 2xx).
It sends and judges through :func:`tminus.http.request`, as the ``http`` step kind does."""

from __future__ import annotations

from typing import ClassVar

from tminus.http import request
from tminus.plan.checks import HttpCheck
from tminus.sources.base import CheckContext, Measurement

__all__ = ["SOURCE", "HttpSource"]


class HttpSource:
    source: ClassVar[str] = "http"

    async def measure(self, check: HttpCheck, ctx: CheckContext) -> Measurement:
        res = await request(
            ctx.resolver,
            method=check.method,
            url=check.url,
            headers=check.headers,
            timeout=check.timeout,
            body=check.body or None,
            status=check.status,
            body_contains=check.body_contains,
        )
        if isinstance(res, str):
            return Measurement(error=res)
        msg = res.summary
        if not res.body_ok:
            msg += f"; body lacks {check.body_contains!r}"
        metric = check.metric or "latency"
        value: object = {"latency": res.latency, "status": res.status, "body": res.text}.get(
            metric, res.latency
        )
        return Measurement(
            value=value,
            values={"latency": res.latency, "status": res.status},
            ok=res.status_ok and res.body_ok,
            message=msg,
        )


SOURCE = HttpSource()
