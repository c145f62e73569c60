"""source: haproxy against a real HAProxy in front of the real app: 5xx rate per interval."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.sources.conftest import measure, plan_with
from tminus.testing.app import AppProcess
from tminus.testing.haproxy import HaproxyServer
from tminus.testing.load import constant_rate


def codes(app: AppProcess) -> dict[str, int]:
    info: Any = app.info()
    return {str(k): int(v) for k, v in info["codes"].items()}


def canary_load(hap: HaproxyServer, seconds: float = 1.5) -> int:
    res = asyncio.run(
        constant_rate(hap.url + "/", rps=200, duration=seconds, headers={"Cookie": "canary=1"})
    )
    return res.total


def test_5xx_rate_is_over_the_interval_since_the_previous_measurement(
    apps: tuple[AppProcess, AppProcess], haproxy: HaproxyServer
) -> None:
    _, canary = apps
    plan = plan_with(
        {
            "canary_5xx": {
                "source": "haproxy",
                "router": "lb",
                "backend": "app_canary",
                "server": "canary1",
                "critical": "> 5%",
            },
            "canary_rtime": {
                "source": "haproxy",
                "router": "lb",
                "backend": "app_canary",
                "metric": "rtime",
                "warn": "> 10ms",
            },
        },
        routers={"lb": haproxy.router_config()},
    )
    asyncio.run(measure(plan, "canary_5xx"))  # the first sample: cumulative, then intervals

    before = codes(canary)
    canary.set(error_rate=0.3)
    sent = canary_load(haproxy)
    after = codes(canary)
    res = asyncio.run(measure(plan, "canary_5xx"))
    fives = after.get("500", 0) - before.get("500", 0)
    total = sum(after.values()) - sum(before.values())
    assert total >= 0.9 * sent  # the requests with the cookie reached the canary
    assert res.status == "failed" and res.level == "critical", res
    # HAProxy's count of the interval is the app's own (exact on an idle machine)
    assert abs(res.value - fives / total) < 0.01, (res.value, fives, total)
    assert abs(res.value - 0.3) < 0.1

    # the next interval is healthy: its rate is ~0, not the cumulative ~15%
    canary.set(error_rate=0.0, latency=0.05)
    canary_load(haproxy, 1.0)
    res = asyncio.run(measure(plan, "canary_5xx"))
    assert res.status == "passed" and res.value == 0.0, res
    assert "app_canary server canary1: 0/200 5xx in the last" in res.message
    rtime = asyncio.run(measure(plan, "canary_rtime"))
    assert rtime.level == "warn" and 0.01 < rtime.value < 0.06, rtime  # avg, last 1024

    # no request in the interval: no data, inconclusive
    res = asyncio.run(measure(plan, "canary_5xx"))
    assert res.status == "inconclusive" and "no response" in res.message


def test_backend_row_status_and_errors(haproxy: HaproxyServer) -> None:
    plan = plan_with(
        {
            "status": {"source": "haproxy", "router": "lb", "metric": "status"},
            "scur": {"source": "haproxy", "router": "lb", "metric": "scur", "expect": ">= 0"},
            "nosuch": {"source": "haproxy", "router": "lb", "server": "web9"},
            "badmetric": {"source": "haproxy", "router": "lb", "metric": "nope"},
            "down": {"source": "haproxy", "router": "gone"},
        },
        routers={
            "lb": haproxy.router_config(),
            "gone": haproxy.router_config(socket=str(haproxy.dir / "missing.sock")),
        },
    )
    status = asyncio.run(measure(plan, "status"))
    assert status.status == "passed" and status.value == "UP", status
    assert asyncio.run(measure(plan, "scur")).status == "passed"
    nosuch = asyncio.run(measure(plan, "nosuch"))
    assert nosuch.status == "error" and "no server 'web9' in backend 'app'" in nosuch.message
    assert "stable1" in nosuch.message
    bad = asyncio.run(measure(plan, "badmetric"))
    assert bad.status == "error" and "5xx_rate" in bad.message
    down = asyncio.run(measure(plan, "down"))
    assert down.status == "error" and "cannot reach the HAProxy stats socket" in down.message
