"""Real apps behind real nginx and HAProxy (no mocks): fixtures and helpers for router tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tminus.plan.interpolate import Resolver
from tminus.plan.targets import HaproxyRouter, NginxRouter
from tminus.routers.base import Router, RouterContext, open_router
from tminus.testing.app import AppProcess
from tminus.testing.haproxy import HaproxyServer
from tminus.testing.load import LoadResult, constant_rate
from tminus.testing.nginx import NginxServer


@pytest.fixture(scope="package")
def apps() -> Iterator[dict[str, AppProcess]]:
    """Two app versions, shared by the router tests (each test sets the faults it needs)."""
    with AppProcess("stable") as stable, AppProcess("canary") as canary:
        yield {"stable": stable, "canary": canary}


@pytest.fixture(autouse=True)
def _healthy_apps(request: pytest.FixtureRequest) -> None:
    if "apps" in request.fixturenames:
        for app in request.getfixturevalue("apps").values():
            app.set(error_rate=0.0, latency=0.0)


def pools_of(apps: dict[str, AppProcess]) -> dict[str, list[str]]:
    return {name: [app.address] for name, app in apps.items()}


@pytest.fixture
def ngx(apps: dict[str, AppProcess]) -> Iterator[NginxServer]:
    with NginxServer(pools=pools_of(apps), cookie="canary") as server:
        yield server


@pytest.fixture
def hap(apps: dict[str, AppProcess]) -> Iterator[HaproxyServer]:
    with HaproxyServer(pools=pools_of(apps), cookie="canary") as server:
        yield server


def router(config: dict[str, Any], name: str = "edge") -> Any:
    """The router module's object for a fixture's ``router_config()`` (typed loosely so tests
    can reach router-specific extras such as ``servers_state``)."""
    model = {"nginx": NginxRouter, "haproxy": HaproxyRouter}[config["kind"]]
    ctx = RouterContext(name=name, resolver=Resolver(), state_dir=Path("."), services={})
    r: Router = open_router(name, ctx, model(**config))
    return r


def load(url: str, *, rps: float, duration: float, cookie: str | None = None) -> LoadResult:
    headers = {"Cookie": cookie} if cookie else None
    return asyncio.run(constant_rate(url + "/", rps=rps, duration=duration, headers=headers))


def within_binomial(count: int, n: int, p: float, sds: float = 4.5) -> bool:
    sd = (n * p * (1 - p)) ** 0.5
    return abs(count - n * p) <= sds * sd


async def switch_under_load(
    r: Any, url: str, *, switches: int, every: float = 0.6, rps: float = 300
) -> tuple[LoadResult, float, str]:
    """Blue-green switches (stable ↔ canary, 100/0) every ``every`` seconds while a constant
    load runs (until ``every`` after the last switch); returns the load, when the last switch
    returned, and the pool it switched to."""
    stop = asyncio.Event()
    task = asyncio.create_task(constant_rate(url + "/", rps=rps, duration=600, stop=stop))
    await asyncio.sleep(every)
    final = "stable"
    last = 0.0
    for i in range(switches):
        final = "canary" if i % 2 == 0 else "stable"
        other = "stable" if final == "canary" else "canary"
        await r.set_weights({final: 100, other: 0})
        last = time.time()
        await asyncio.sleep(every)
    stop.set()
    return await task, last, final
