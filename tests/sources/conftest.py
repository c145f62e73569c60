"""Real services for the metric-source tests: two app versions, HAProxy in front of them
(cookie ``canary`` routes to the canary's own backend), and Prometheus scraping both."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tminus.engine.checking import run_check
from tminus.plan.checks import CheckUse
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.routers.haproxy_api import runtime_command
from tminus.sources.base import CheckResult
from tminus.testing.app import AppProcess
from tminus.testing.haproxy import HaproxyServer
from tminus.testing.prometheus import PrometheusServer


@pytest.fixture(scope="package")
def apps() -> Iterator[tuple[AppProcess, AppProcess]]:
    with AppProcess("stable") as stable, AppProcess("canary") as canary:
        yield stable, canary


@pytest.fixture(autouse=True)
def healthy(request: pytest.FixtureRequest) -> None:
    """Every test starts with both versions healthy (when it uses them)."""
    for name in ("apps", "scraped"):
        if name in request.fixturenames:
            for app in request.getfixturevalue(name):
                app.set(error_rate=0.0, latency=0.0)


@pytest.fixture(scope="package")
def haproxy(apps: tuple[AppProcess, AppProcess]) -> Iterator[HaproxyServer]:
    stable, canary = apps
    hap = HaproxyServer(
        {"stable": [stable.address], "canary": [canary.address]},
        cookie="canary",
        weights={"stable": 1, "canary": 0},
    )
    with hap:
        # requests carrying the cookie go to the canary's backend, the others to stable
        asyncio.run(runtime_command(str(hap.socket), f"add map {hap.cookie_map} route app_canary"))
        yield hap


@pytest.fixture(scope="package")
def scraped() -> Iterator[tuple[AppProcess, AppProcess]]:
    """Two versions only the Prometheus tests send traffic to (their counters are exact)."""
    with AppProcess("stable") as stable, AppProcess("canary") as canary:
        yield stable, canary


@pytest.fixture(scope="package")
def prometheus(scraped: tuple[AppProcess, AppProcess]) -> Iterator[PrometheusServer]:
    stable, canary = scraped
    with PrometheusServer([stable.address, canary.address]) as prom:
        yield prom


def plan_with(checks: dict[str, Any], **targets: Any) -> Plan:
    return Plan.model_validate(
        {
            "name": "metrics-test",
            "targets": targets,
            "checks": checks,
            "phases": [{"name": "p", "steps": [{"kind": "wait", "duration": "1s"}]}],
        }
    )


async def measure(plan: Plan, name: str) -> CheckResult:
    """The engine's one way to run a check: resolve, measure with the provider, judge."""
    with tempfile.TemporaryDirectory() as tmp:
        return await run_check(plan, Resolver.for_plan({}, {}), Path(tmp), CheckUse(use=name))
