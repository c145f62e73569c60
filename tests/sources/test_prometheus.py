"""source: prometheus against a real Prometheus scraping the real app under real load."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.sources.conftest import measure, plan_with
from tminus.analysis.runner import run_analysis
from tminus.engine.checking import run_check
from tminus.plan.checks import CheckBase
from tminus.plan.interpolate import Resolver
from tminus.sources.base import CheckResult
from tminus.testing.app import AppProcess, free_port
from tminus.testing.load import constant_rate
from tminus.testing.prometheus import PrometheusServer

CANARY_5XX = (
    'sum(increase(http_requests_total{version="canary",code=~"5.."}[1m]))'
    ' / sum(increase(http_requests_total{version="canary"}[1m]))'
)


def codes(app: AppProcess) -> dict[str, int]:
    info: Any = app.info()
    return {str(k): int(v) for k, v in info["codes"].items()}


def test_canary_5xx_rate_from_real_traffic(
    scraped: tuple[AppProcess, AppProcess], prometheus: PrometheusServer
) -> None:
    _, canary = scraped
    canary.set(error_rate=0.2)
    load = asyncio.run(constant_rate(canary.url + "/", rps=150, duration=3.0))
    assert load.total >= 400
    prometheus.wait_for_scrape()
    c = codes(canary)
    truth = c.get("500", 0) / sum(c.values())  # everything the canary ever answered
    plan = plan_with(
        {
            "canary_5xx": {
                "source": "prometheus",
                "target": "prom",
                "query": CANARY_5XX,
                "critical": "> 5%",
            }
        },
        metrics={"prom": {"kind": "prometheus", "url": prometheus.url}},
    )
    result = asyncio.run(measure(plan, "canary_5xx"))
    assert result.status == "failed" and result.level == "critical", result
    # Prometheus agrees with what the app counted, and both with the injected 20%
    assert abs(result.value - truth) < 0.02, (result.value, truth)
    assert abs(result.value - 0.2) < 0.07, result.value
    assert "CRITICAL" in result.message


def test_several_series_by_label_set_and_metric_picks(
    scraped: tuple[AppProcess, AppProcess], prometheus: PrometheusServer
) -> None:
    stable, canary = scraped
    asyncio.run(constant_rate(stable.url + "/", rps=100, duration=0.5))
    prometheus.wait_for_scrape()
    query = 'sum by (version) (http_requests_total{code="200"})'
    plan = plan_with(
        {
            "all": {"source": "prometheus", "url": prometheus.url, "query": query},
            "canary": {
                "source": "prometheus",
                "url": prometheus.url,
                "query": query,
                "metric": "version=canary",
            },
            "nomatch": {  # one series, but not the one asked for: no data
                "source": "prometheus",
                "url": prometheus.url,
                "query": 'sum by (version) (http_requests_total{version="stable"})',
                "metric": "version=canary",
            },
            "total": {
                "source": "prometheus",
                "url": prometheus.url,
                "query": query,
                "metric": "sum",
            },
        }
    )
    res_none = asyncio.run(measure(plan, "nomatch"))
    assert res_none.status == "inconclusive" and "no series matches" in res_none.message
    res_all = asyncio.run(measure(plan, "all"))
    res_canary = asyncio.run(measure(plan, "canary"))
    res_total = asyncio.run(measure(plan, "total"))
    sc, cc = codes(stable).get("200", 0), codes(canary).get("200", 0)
    assert res_all.status == "passed" and res_all.value == max(sc, cc)
    assert "max of 2 series" in res_all.message
    assert res_canary.value == cc
    assert res_total.value == sc + cc


def test_no_data_is_inconclusive(prometheus: PrometheusServer) -> None:
    plan = plan_with(
        {
            "empty": {
                "source": "prometheus",
                "url": prometheus.url,
                "query": 'http_requests_total{version="nope"}',
                "expect": "< 1%",
            },
            "nan": {  # 0/0: no errors and no requests in the window
                "source": "prometheus",
                "url": prometheus.url,
                "query": 'sum(rate(http_requests_total{code="404"}[10s]))'
                ' / sum(rate(http_requests_total{code="404"}[10s]))',
                "expect": "< 1%",
            },
            "unconditioned": {
                "source": "prometheus",
                "url": prometheus.url,
                "query": 'http_requests_total{version="nope"}',
            },
        }
    )
    for name in ("empty", "nan", "unconditioned"):
        result = asyncio.run(measure(plan, name))
        assert result.status == "inconclusive", (name, result)
        assert "no data" in result.message


def test_bad_promql_and_range_vector_are_errors(prometheus: PrometheusServer) -> None:
    plan = plan_with(
        {
            "bad": {"source": "prometheus", "url": prometheus.url, "query": "sum(("},
            "matrix": {
                "source": "prometheus",
                "url": prometheus.url,
                "query": "http_requests_total[1m]",
            },
        }
    )
    bad = asyncio.run(measure(plan, "bad"))
    assert bad.status == "error" and "bad_data" in bad.message, bad
    matrix = asyncio.run(measure(plan, "matrix"))
    assert matrix.status == "error" and "range vector" in matrix.message


def test_unreachable_prometheus_is_an_error_then_the_analysis_errors() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    plan = plan_with(
        {
            "down": {
                "source": "prometheus",
                "url": url,
                "query": "up",
                "expect": "== 1",
                "interval": "0.05s",
                "consecutive_error_limit": 2,
            }
        }
    )
    one = asyncio.run(measure(plan, "down"))
    assert one.status == "error" and "unreachable" in one.message and "ConnectError" in one.message
    check = plan.checks["down"]
    assert isinstance(check, CheckBase)

    async def measure_check(c: CheckBase) -> CheckResult:
        return await run_check(plan, Resolver.for_plan({}, {}), __import__("pathlib").Path("."), c)

    # Argo: errors in a row beyond consecutive_error_limit end the analysis as "error"
    res = asyncio.run(run_analysis([check], measure_check, duration=30))
    assert res.status == "error" and len(res.measurements) == 3
    # within the limit, the window ends with no passed measurement: inconclusive, no promotion
    res = asyncio.run(
        run_analysis([check.model_copy(update={"interval": None})], measure_check, duration=0.1)
    )
    assert res.status == "inconclusive" and len(res.measurements) == 1
