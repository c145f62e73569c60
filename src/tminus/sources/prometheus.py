"""``source: prometheus``: an instant PromQL query over the HTTP API (``/api/v1/query``).

The server is the check's ``url`` or its ``target``'s (a ``metrics`` target of kind
prometheus); headers are the target's, then the check's. The result:

- a scalar, or a vector with one series: its value;
- an empty vector, or NaN: no data (inconclusive: pauses, never promotes);
- a vector with several series: ``values`` by label set (``{code="500",version="canary"}``)
  and ``value`` their maximum, or what ``metric:`` picks: ``max`` (default), ``min``, ``sum``,
  ``avg``, ``count``, or ``label=value[,label=value]`` to keep the matching series;
- a range vector (matrix): an error (query an instant vector, e.g. ``rate(x[5m])``);
- a string: its text.

An unreachable server, an HTTP error, or Prometheus's ``"status": "error"`` (bad PromQL: 400,
cannot execute: 422, timeout: 503) is an error measurement (``ok=False`` with ``error``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import httpx

from tminus.plan.checks import PrometheusCheck
from tminus.plan.targets import PrometheusSource as PrometheusTarget
from tminus.sources.base import CheckContext, Measurement

__all__ = ["SOURCE", "PrometheusSource", "parse_result", "series_key"]

DEFAULT_TIMEOUT_S = 10.0
_AGGREGATES = ("max", "min", "sum", "avg", "count")


def series_key(labels: dict[str, str]) -> str:
    """``{a="1",b="2"}`` (sorted, ``__name__`` first when present)."""
    name = labels.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def _number(raw: Any) -> float:
    # Prometheus sends sample values as strings: "0.25", "NaN", "+Inf", "-Inf".
    return float(raw)


def _pick(values: dict[str, float], labels: dict[str, dict[str, str]], metric: str | None) -> Any:
    how = (metric or "max").strip()
    if how in _AGGREGATES:
        nums = list(values.values())
        if how == "max":
            return max(nums)
        if how == "min":
            return min(nums)
        if how == "sum":
            return sum(nums)
        if how == "avg":
            return sum(nums) / len(nums)
        return len(nums)
    if how in values:
        return values[how]
    wanted: dict[str, str] = {}
    for part in how.split(","):
        k, sep, v = part.partition("=")
        if not sep:
            raise ValueError(
                f"metric '{how}': use max, min, sum, avg, count, a series key or label=value"
            )
        wanted[k.strip()] = v.strip().strip("\"'")
    chosen = [
        values[key]
        for key, lab in labels.items()
        if all(lab.get(k) == v for k, v in wanted.items())
    ]
    return max(chosen) if chosen else None


def parse_result(data: dict[str, Any], metric: str | None = None) -> Measurement:
    """Turn the ``data`` of a successful ``/api/v1/query`` answer into a measurement."""
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar" or kind == "string":
        if not isinstance(result, list) or len(result) != 2:
            return Measurement(error=f"prometheus: malformed {kind} result: {result!r}")
        if kind == "string":
            return Measurement(value=str(result[1]), message=str(result[1]))
        value = _number(result[1])
        if math.isnan(value):
            return Measurement(no_data=True, message="the query returned NaN (no data)")
        return Measurement(value=value, values={"value": value}, message=f"scalar {value:.6g}")
    if kind == "matrix":
        return Measurement(
            error="prometheus: the query returns a range vector (matrix); query an instant "
            "vector, e.g. rate(http_requests_total[5m]) instead of http_requests_total[5m]"
        )
    if kind != "vector" or not isinstance(result, list):
        return Measurement(error=f"prometheus: unexpected resultType {kind!r}")
    values: dict[str, float] = {}
    labels: dict[str, dict[str, str]] = {}
    for series in result:
        lab = dict(series.get("metric") or {})
        value = _number(series["value"][1])
        if math.isnan(value):
            continue
        key = series_key(lab)
        values[key] = value
        labels[key] = lab
    if not values:
        why = "no series" if not result else "only NaN"
        return Measurement(no_data=True, message=f"the query returned {why} (no data)")
    if len(values) == 1 and (metric is None or metric.strip() in _AGGREGATES):
        ((key, value),) = values.items()
        return Measurement(value=value, values=values, message=f"{key} {value:.6g}")
    try:
        picked = _pick(values, labels, metric)
    except ValueError as exc:
        return Measurement(error=str(exc))
    if picked is None:
        return Measurement(
            no_data=True, values=values, message=f"no series matches metric '{metric}'"
        )
    how = metric or "max"
    return Measurement(
        value=picked, values=values, message=f"{how} of {len(values)} series: {picked:.6g}"
    )


class PrometheusSource:
    source: ClassVar[str] = "prometheus"

    async def measure(self, check: PrometheusCheck, ctx: CheckContext) -> Measurement:
        r = ctx.resolver
        headers: dict[str, str] = {}
        base = check.url
        if check.target:
            target = ctx.plan.targets.metrics.get(check.target)
            if not isinstance(target, PrometheusTarget):
                return Measurement(error=f"metrics target '{check.target}' is not defined")
            base = base or target.url
            headers.update(target.headers)
        headers.update(check.headers)
        assert base is not None  # the model requires target or url
        url = r.resolve(base).rstrip("/") + "/api/v1/query"
        resolved = {k: r.resolve(v) for k, v in headers.items()}
        timeout = check.timeout.total_seconds() if check.timeout else DEFAULT_TIMEOUT_S
        query = r.resolve(check.query)
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                resp = await client.post(url, data={"query": query}, headers=resolved)
        except httpx.HTTPError as exc:
            return Measurement(
                error=r.mask(f"prometheus at {url} unreachable: {type(exc).__name__}: {exc}")
            )
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return Measurement(
                error=r.mask(
                    f"prometheus at {url}: HTTP {resp.status_code}, not the API: "
                    f"{resp.text[:200]!r}"
                )
            )
        if body.get("status") != "success":
            kind = body.get("errorType", f"HTTP {resp.status_code}")
            return Measurement(error=r.mask(f"prometheus: {kind}: {body.get('error', '')}"))
        try:
            m = parse_result(body.get("data") or {}, check.metric)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return Measurement(error=f"prometheus: malformed answer ({type(exc).__name__}: {exc})")
        warnings = body.get("warnings")
        if warnings:
            m.message += "; warnings: " + "; ".join(str(w) for w in warnings)
        m.message = r.mask(m.message)
        return m


SOURCE = PrometheusSource()
