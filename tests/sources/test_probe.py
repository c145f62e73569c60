"""source: probe against the real app, directly and through HAProxy with cookies."""

from __future__ import annotations

import asyncio
import time

from tests.sources.conftest import measure, plan_with
from tminus.sources.probe import Side, run_probe
from tminus.testing.app import AppProcess, free_port
from tminus.testing.haproxy import HaproxyServer


def test_a_failing_canary_stops_the_probe_within_a_handful_of_requests(
    apps: tuple[AppProcess, AppProcess],
) -> None:
    stable, canary = apps
    canary.set(error_rate=1.0)
    before = int(canary.info()["requests"])  # type: ignore[call-overload]
    plan = plan_with(
        {
            "probe": {
                "source": "probe",
                "url": canary.url + "/",
                "baseline_url": stable.url + "/",
                "rate": 20,
                "duration": "30s",
                "critical": "> 50%",
            }
        }
    )
    t0 = time.monotonic()
    result = asyncio.run(measure(plan, "probe"))
    took = time.monotonic() - t0
    served = int(canary.info()["requests"]) - before  # type: ignore[call-overload]
    assert result.status == "failed" and result.level == "critical", result
    assert result.value == 1.0
    assert served <= 10 + 8, served  # the deciding ~9, plus at most `concurrency` in flight
    assert took < 10.0, took  # of a 30 s measurement (~0.5 s on an idle machine)
    out = asyncio.run(
        run_probe(Side(canary.url + "/"), Side(stable.url + "/"), rate=20, duration=30)
    )
    assert out.reason == "errors" and out.stopped_early
    assert out.canary.requests <= 10, out.canary.requests  # results fed in sending order


def test_the_verdict_fails_the_measurement_whatever_the_conditions() -> None:
    # no condition at all; the canary answers nothing (connection refused): error rate 100%
    plan = plan_with(
        {"probe": {"source": "probe", "url": f"http://127.0.0.1:{free_port()}/", "rate": 50}}
    )
    result = asyncio.run(measure(plan, "probe"))
    assert result.status == "failed" and "error rate above the budget" in result.message
    assert "stopped early" in result.message


def test_a_url_that_cannot_be_requested_is_an_error() -> None:
    plan = plan_with({"probe": {"source": "probe", "url": "http://127.0.0.1:notaport/"}})
    result = asyncio.run(measure(plan, "probe"))
    assert result.status == "error" and "InvalidURL" in result.message, result


def test_a_healthy_canary_passes(apps: tuple[AppProcess, AppProcess]) -> None:
    stable, canary = apps
    out = asyncio.run(
        run_probe(
            Side(canary.url + "/"),
            Side(stable.url + "/"),
            rate=40,
            duration=1.5,
            concurrency=16,
            request_timeout=30,
        )
    )
    assert not out.stopped_early and out.verdict != "canary_worse"
    values = out.values()
    total = values["requests"] + values["baseline_requests"]
    assert 60 <= total <= 120, total  # 2 x 40 rps x 1.5 s (fewer on a loaded machine)
    assert values["requests"] >= 15 and values["baseline_requests"] >= 15  # the coin
    assert values["error_rate"] == 0.0 and values["baseline_error_rate"] == 0.0
    assert 0 < values["p50"] <= values["p95"] <= values["p99"]
    plan = plan_with(
        {
            "probe": {
                "source": "probe",
                "url": canary.url + "/",
                "baseline_url": stable.url + "/",
                "rate": 30,
                "duration": "1s",
                "critical": "> 5%",
                "warn": "> 0",
            }
        }
    )
    result = asyncio.run(measure(plan, "probe"))
    assert result.status == "passed" and result.level == "ok" and result.value == 0.0, result


def test_injected_latency_shows_in_p95_and_the_latency_test(
    apps: tuple[AppProcess, AppProcess],
) -> None:
    stable, canary = apps
    canary.set(latency=0.5)
    plan = plan_with(
        {
            "p95": {
                "source": "probe",
                "url": canary.url + "/",
                "baseline_url": stable.url + "/",
                "rate": 20,
                "concurrency": 16,
                "duration": "1.5s",
                "metric": "p95",
                "sequential": False,
                "critical": "> 400ms",
            }
        }
    )
    result = asyncio.run(measure(plan, "p95"))
    assert result.status == "failed" and result.value >= 0.5, result
    out = asyncio.run(
        run_probe(
            Side(canary.url + "/"),
            Side(stable.url + "/"),
            rate=25,
            duration=30,
            concurrency=32,
        )
    )
    values = out.values()
    assert out.verdict == "canary_worse" and out.reason == "latency" and out.stopped_early
    assert values["p95"] >= 0.5 and values["p95"] > values["baseline_p95"]
    assert values["error_rate"] == 0.0
    # 20 baseline latencies first (about 40 requests), then about ten slow canary requests
    assert values["requests"] <= 60, values
    assert out.elapsed < 15.0
    # the requests cancelled by the early stop are still being answered (0.5 s late): let
    # them finish so that they do not count in the next test's traffic
    time.sleep(0.7)


def test_cookies_route_through_haproxy(
    apps: tuple[AppProcess, AppProcess], haproxy: HaproxyServer
) -> None:
    stable, canary = apps
    canary.set(error_rate=1.0)
    s0 = int(stable.info()["requests"])  # type: ignore[call-overload]
    c0 = int(canary.info()["requests"])  # type: ignore[call-overload]
    plan = plan_with(
        {
            "probe": {
                "source": "probe",
                "url": haproxy.url + "/",
                "cookie": "canary=1",
                "baseline_cookie": "stable=1",  # no 'canary' cookie: the default backend
                "headers": {"User-Agent": "tminus-probe"},
                "rate": 20,
                "duration": "10s",
            }
        }
    )
    result = asyncio.run(measure(plan, "probe"))
    s1 = int(stable.info()["requests"])  # type: ignore[call-overload]
    c1 = int(canary.info()["requests"])  # type: ignore[call-overload]
    assert result.status == "failed" and "more errors than the baseline" in result.message
    assert 0 < c1 - c0 <= 18 and s1 - s0 > 0  # each side reached its own version
