"""``source: probe``: tminus's own HTTP prober, with a sequential test that stops early.

For ``duration`` (default: the check's ``interval``, else 5 s) it sends GET requests on a
fixed schedule (an open model: a slow answer does not slow the schedule, up to
``concurrency`` requests in flight) to ``url`` with the check's ``headers`` and ``cookie``.
With a baseline (``baseline_url`` and/or ``baseline_cookie``) each scheduled request goes to
the canary or to the baseline by a fair coin, at twice ``rate``: each side gets ``rate``
requests per second on average, at the same moments, under the same conditions. The coin is
what makes the comparison exact (docs/analysis.md).

A request is an error when it gets no answer (connection refused or reset, timeout after
``request_timeout``) or a 5xx status. Values:

- ``error_rate`` (the default ``metric``), ``requests``, ``errors``; ``p50``, ``p95``,
  ``p99`` latency in seconds of the canary's answered requests; the same prefixed with
  ``baseline_``;
- ``verdict``: ``canary_worse``, ``no_difference`` or ``continue``; ``reason`` (``errors``,
  ``latency``, ``error_budget``); ``statistic`` and ``latency_statistic`` (the tests'
  e-values), ``p_value`` (always valid, Bonferroni-adjusted over the tests run),
  ``stopped_early``, ``elapsed``.

Results are fed to the sequential tests in the order the requests were scheduled. With
``sequential: true`` (default) the probe stops AS SOON AS a test finds the canary worse —
a canary failing every request is caught within about ten of its requests — and the
measurement fails (``ok=False``) whatever its conditions say. No canary request answered
or failed: no data (inconclusive).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import httpx

from tminus.plan.checks import ProbeCheck
from tminus.sources.base import CheckContext, Measurement
from tminus.sources.sequential import Decision, LatencyTest, OneSampleTest, SequentialTest

__all__ = ["SOURCE", "ProbeResult", "ProbeSource", "Side", "percentile", "run_probe"]

DEFAULT_DURATION_S = 5.0
DEFAULT_REQUEST_TIMEOUT_S = 5.0
DEFAULT_MAX_ERROR_RATE = 0.01

Arm = Literal["canary", "baseline"]


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0–100) of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Side:
    """Where and how to send one side's requests, and what came back."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def summary(self, prefix: str = "") -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            f"{prefix}requests": self.requests,
            f"{prefix}errors": self.errors,
            f"{prefix}error_rate": self.error_rate,
            f"{prefix}p50": percentile(lat, 50),
            f"{prefix}p95": percentile(lat, 95),
            f"{prefix}p99": percentile(lat, 99),
        }


@dataclass
class ProbeResult:
    canary: Side
    baseline: Side | None
    verdict: str = "continue"
    reason: str | None = None
    errors_test: Decision | None = None
    latency_test: Decision | None = None
    budget_test: Decision | None = None
    stopped_early: bool = False
    elapsed: float = 0.0
    tests: int = 1
    fatal: str | None = None  # the probe could not send requests at all (a bad URL)

    @property
    def p_value(self) -> float:
        ps = [d.p_value for d in (self.errors_test, self.latency_test, self.budget_test) if d]
        return min(1.0, self.tests * min(ps)) if ps else 1.0

    def values(self) -> dict[str, Any]:
        out = self.canary.summary()
        if self.baseline is not None:
            out.update(self.baseline.summary("baseline_"))
        out["verdict"] = self.verdict
        out["reason"] = self.reason
        if self.errors_test is not None:
            out["statistic"] = self.errors_test.statistic
        if self.latency_test is not None:
            out["latency_statistic"] = self.latency_test.statistic
        if self.budget_test is not None:
            out["budget_statistic"] = self.budget_test.statistic
        out["p_value"] = self.p_value
        out["stopped_early"] = self.stopped_early
        out["elapsed"] = self.elapsed
        return out


async def run_probe(
    canary: Side,
    baseline: Side | None = None,
    *,
    rate: float,
    duration: float,
    concurrency: int = 8,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
    sequential: bool = True,
    alpha: float = 0.01,
    max_error_rate: float | None = None,
    rng: random.Random | None = None,
) -> ProbeResult:
    """Probe for ``duration`` seconds (or until a sequential test finds the canary worse)."""
    rng = rng or random.Random()
    budget = max_error_rate
    if baseline is None and budget is None:
        budget = DEFAULT_MAX_ERROR_RATE
    n_tests = (2 if baseline is not None else 0) + (1 if budget is not None else 0)
    a = alpha / n_tests
    errors_test = SequentialTest(a, weight=0.5) if baseline is not None else None
    latency_test = LatencyTest(a, weight=0.5) if baseline is not None else None
    budget_test = OneSampleTest(budget, a) if budget is not None else None
    out = ProbeResult(canary, baseline, tests=n_tests)

    results: dict[int, tuple[Arm, bool, float | None]] = {}
    fed = 0
    stop = asyncio.Event()

    def feed() -> None:
        nonlocal fed
        while fed in results:
            arm, failed, seconds = results.pop(fed)
            fed += 1
            side = canary if arm == "canary" else baseline
            assert side is not None
            side.requests += 1
            side.errors += failed
            if seconds is not None:
                side.latencies.append(seconds)
            if errors_test is not None and baseline is not None:
                out.errors_test = errors_test.update(
                    canary.errors, canary.requests, baseline.errors, baseline.requests
                )
            if latency_test is not None and seconds is not None:
                out.latency_test = latency_test.observe(arm, seconds)
            if budget_test is not None and arm == "canary":
                out.budget_test = budget_test.update(canary.errors, canary.requests)
            for reason, d in (
                ("errors", out.errors_test),
                ("latency", out.latency_test),
                ("error_budget", out.budget_test),
            ):
                if d is not None and d.canary_worse and out.reason is None:
                    out.verdict, out.reason = "canary_worse", reason
                    if sequential:
                        stop.set()

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = {
        "canary": httpx.AsyncClient(timeout=request_timeout, limits=limits),
        "baseline": httpx.AsyncClient(timeout=request_timeout, limits=limits),
    }
    slots = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def one(seq: int, arm: Arm) -> None:
        side = canary if arm == "canary" else baseline
        assert side is not None
        t0 = time.perf_counter()
        try:
            resp = await clients[arm].get(side.url, headers=side.headers)
            results[seq] = (arm, resp.status_code >= 500, time.perf_counter() - t0)
        except httpx.HTTPError:  # no answer: refused, reset, timed out
            results[seq] = (arm, True, None)
        except Exception as exc:  # cannot even send it (an invalid URL): the probe is wrong
            if out.fatal is None:
                out.fatal = f"{type(exc).__name__}: {exc}"
            stop.set()
            return
        finally:
            slots.release()
        feed()

    loop = asyncio.get_running_loop()
    start = loop.time()
    tick = 1.0 / (rate * (2 if baseline is not None else 1))
    seq = 0
    try:
        while not stop.is_set():
            due = start + seq * tick
            if due - start >= duration:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            if stop.is_set():
                slots.release()
                break
            arm: Arm = "canary" if baseline is None or rng.random() < 0.5 else "baseline"
            task = asyncio.create_task(one(seq, arm))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            seq += 1
        if not stop.is_set() and tasks:  # the last answers, unless a test decides first
            rest: asyncio.Future[list[Any]] = asyncio.gather(*tasks, return_exceptions=True)
            waiter: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            await asyncio.wait([rest, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
    finally:
        out.stopped_early = stop.is_set() and out.fatal is None
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients.values():
            await client.aclose()
        out.elapsed = loop.time() - start
    if out.verdict != "canary_worse":
        ds = [d for d in (out.errors_test, out.budget_test) if d is not None]
        if ds and all(d.verdict == "no_difference" for d in ds):
            out.verdict = "no_difference"
    return out


class ProbeSource:
    source: ClassVar[str] = "probe"

    async def measure(self, check: ProbeCheck, ctx: CheckContext) -> Measurement:
        r = ctx.resolver
        url = r.resolve(check.url)
        headers = {k: r.resolve(v) for k, v in check.headers.items()}
        canary_headers = dict(headers)
        if check.cookie:
            canary_headers["Cookie"] = r.resolve(check.cookie)
        baseline = None
        if check.baseline_url is not None or check.baseline_cookie is not None:
            base_headers = dict(headers)
            if check.baseline_cookie:
                base_headers["Cookie"] = r.resolve(check.baseline_cookie)
            base_url = r.resolve(check.baseline_url) if check.baseline_url else url
            baseline = Side(base_url, base_headers)
        if check.duration is not None:
            duration = check.duration.total_seconds()
        elif check.interval is not None:
            duration = check.interval.total_seconds()
        else:
            duration = DEFAULT_DURATION_S
        timeout = (
            check.request_timeout.total_seconds()
            if check.request_timeout
            else DEFAULT_REQUEST_TIMEOUT_S
        )
        result = await run_probe(
            Side(url, canary_headers),
            baseline,
            rate=check.rate,
            duration=duration,
            concurrency=check.concurrency,
            request_timeout=timeout,
            sequential=check.sequential,
            alpha=check.alpha,
            max_error_rate=check.max_error_rate,
        )
        values = result.values()
        metric = check.metric or "error_rate"
        if metric not in values:
            return Measurement(
                error=f"probe: unknown metric '{metric}'; known: {', '.join(sorted(values))}"
            )
        if result.fatal is not None:
            return Measurement(error=r.mask(f"probe: {result.fatal}"))
        message = r.mask(_describe(result))
        if result.canary.requests == 0:
            return Measurement(values=values, no_data=True, message=message)
        worse = check.sequential and result.verdict == "canary_worse"
        return Measurement(value=values[metric], values=values, ok=not worse, message=message)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _describe(res: ProbeResult) -> str:
    c = res.canary
    p95 = _ms(percentile(sorted(c.latencies), 95))
    parts = [f"canary {c.errors}/{c.requests} errors, p95 {p95}"]
    if res.baseline is not None:
        b = res.baseline
        parts.append(
            f"baseline {b.errors}/{b.requests} errors, "
            f"p95 {_ms(percentile(sorted(b.latencies), 95))}"
        )
    text = "; ".join(parts)
    if res.verdict == "canary_worse":
        d = {"errors": res.errors_test, "latency": res.latency_test}.get(
            res.reason or "", res.budget_test
        )
        stat = f" (e-value {d.statistic:.3g} >= {d.threshold:.3g})" if d else ""
        what = {
            "errors": "more errors than the baseline",
            "latency": "slower than the baseline",
            "error_budget": "error rate above the budget",
        }.get(res.reason or "", "worse")
        text = (
            f"canary {what}{stat}"
            + (" — stopped early" if res.stopped_early else "")
            + (f": {text}")
        )
    elif res.verdict == "no_difference":
        text += "; no difference found"
    return text + f" in {res.elapsed:.1f}s"


SOURCE = ProbeSource()
