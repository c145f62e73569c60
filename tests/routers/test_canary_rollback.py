"""A canary's rollback puts the router back EXACTLY as it was, and a cookie route can match
one value of the cookie: real deploys (the CLI in a subprocess) against a real nginx, a real
HAProxy, a flagd file and a private Redis, with real apps behind the proxies.

- the previous split (not 100/0) and the previous cookie route (none) come back after a
  rollback, on nginx and on HAProxy, so cookie holders stop reaching the canary;
- a canary on a ``flags`` router leaves the flag as it was (state, variants, targeting,
  metadata; a flag it created is removed), not enabled at 0%;
- ``cookie: {name: canary, value: "1"}`` routes ``canary=1`` only; ``canary=0`` follows the
  weights; the plain ``cookie: canary`` still routes every value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.conftest import Tm
from tests.routers.conftest import load, pools_of, router
from tminus.flags.base import open_flag_store
from tminus.plan.interpolate import Resolver
from tminus.plan.targets import RedisFlagStore
from tminus.testing.app import AppProcess
from tminus.testing.haproxy import HaproxyServer
from tminus.testing.nginx import NginxServer
from tminus.testing.redis import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as rs:
        yield rs


def canary_then_failure(routers: dict[str, Any], stores: dict[str, Any] | None = None) -> str:
    """Phase 1: a canary on router ``edge`` to 30%, kept for a later phase (``promote:
    false``); phase 2 fails, so the deploy rolls back through phase 1's compensation."""
    plan = {
        "name": "canary-rollback",
        "targets": {"routers": routers, "flag_stores": stores or {}},
        "phases": [
            {
                "name": "Canary 30%",
                "steps": [
                    {
                        "kind": "canary",
                        "router": "edge",
                        "stable": "stable",
                        "canary": "canary",
                        "steps": [{"weight": 30}],
                        "promote": False,
                    }
                ],
            },
            {"name": "Smoke test", "steps": [{"kind": "run", "command": "exit 1"}]},
        ],
    }
    return yaml.safe_dump(plan, sort_keys=False)


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_rollback_restores_the_previous_split_and_cookie_route(
    tmp_path: Path, kind: str, ngx: NginxServer, hap: HaproxyServer
) -> None:
    """The split before the canary (90/10) and "no cookie route" are back after the rollback,
    and requests carrying the cookie follow the weights again instead of reaching the canary.

    Mutation tried: the canary's compensation as before (a ``traffic`` step setting
    ``{stable: 100, canary: 0}``): fails, the weights are 100/0 and the cookie route stays on
    the canary pool (nginx and HAProxy)."""
    server: NginxServer | HaproxyServer = ngx if kind == "nginx" else hap
    r = router(server.router_config())
    asyncio.run(r.set_weights({"stable": 90, "canary": 10}))
    assert asyncio.run(r.get_cookie_route()) is None
    (tmp_path / "plan.yaml").write_text(canary_then_failure({"edge": server.router_config()}))
    tm = Tm(tmp_path)
    proc = tm("run", "plan.yaml")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    deploy = tm.latest()
    assert deploy["state"] == "rolled_back"
    assert asyncio.run(r.get_weights()) == {"stable": 90, "canary": 10}
    assert asyncio.run(r.get_cookie_route()) is None
    # cookie holders are no longer pinned to the canary: most of them reach stable
    res = load(server.url, rps=200, duration=1.0, cookie="canary=1")
    assert res.failed == 0 and res.by_body.get("stable", 0) > res.total // 2, res.by_body
    log = tm.json("log", deploy["id"])
    restored = [e for e in log if e["type"] == "traffic.restored"]
    assert restored and restored[0]["data"]["cookie_route"] is None


FLAGD_BEFORE = {
    "state": "DISABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "targeting": {"fractional": [{"var": "targetingKey"}, ["on", 10], ["off", 90]]},
    "metadata": {"owner": "checkout", "ticket": "OPS-12"},
}


def test_flags_router_rollback_restores_the_flag_file_exactly(tmp_path: Path) -> None:
    """A canary on a ``flags`` router over a flagd file: after the rollback the flag is
    byte-for-byte what it was (DISABLED, its variants, targeting and metadata), not enabled
    at 0%.

    Mutation tried: the compensation as before (``{stable: 100, canary: 0}``): fails, the flag
    is left ``ENABLED`` with a fractional rule at 0%."""
    flags = tmp_path / "flags.json"
    flags.write_text(json.dumps({"flags": {"checkout-v2": FLAGD_BEFORE}}, indent=2))
    before = flags.read_text()
    text = canary_then_failure(
        {"edge": {"kind": "flags", "store": "file", "flag": "checkout-v2"}},
        {"file": {"kind": "flagd", "path": str(flags)}},
    )
    (tmp_path / "plan.yaml").write_text(text)
    tm = Tm(tmp_path)
    proc = tm("run", "plan.yaml")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert tm.latest()["state"] == "rolled_back"
    assert json.loads(flags.read_text()) == json.loads(before)


def test_flags_router_rollback_removes_a_flag_it_created_and_restores_one_it_changed(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis: a flag that did not exist is removed again; one that existed (disabled, at 40%)
    gets its exact fields back.

    Mutation tried: the compensation as before: fails, the created flag is left in Redis
    (enabled, 0%)."""
    url = redis_server.url
    store = open_flag_store(
        "live", RedisFlagStore(kind="redis", url=url, prefix="t12:"), Resolver()
    )
    asyncio.run(store.update("kept", percentage=40, enabled=False))
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        client.delete("t12:fresh")
        kept_before = client.hgetall("t12:kept")
        for flag in ("fresh", "kept"):
            d = tmp_path / flag
            d.mkdir()
            text = canary_then_failure(
                {"edge": {"kind": "flags", "store": "live", "flag": flag}},
                {"live": {"kind": "redis", "url": url, "prefix": "t12:"}},
            )
            (d / "plan.yaml").write_text(text)
            proc = Tm(d)("run", "plan.yaml")
            assert proc.returncode == 1, proc.stdout + proc.stderr
        assert not client.exists("t12:fresh"), client.hgetall("t12:fresh")
        assert client.hgetall("t12:kept") == kept_before
    finally:
        client.delete("t12:fresh", "t12:kept")
        client.close()


# --- a cookie route that matches one value ----------------------------------------------------


@pytest.fixture(params=["nginx", "haproxy"])
def valued(
    request: pytest.FixtureRequest, apps: dict[str, AppProcess]
) -> Iterator[NginxServer | HaproxyServer]:
    cls = NginxServer if request.param == "nginx" else HaproxyServer
    with cls(pools=pools_of(apps), cookie="canary", cookie_value="1") as server:
        yield server


def test_a_cookie_route_with_a_value_routes_only_that_value(
    valued: NginxServer | HaproxyServer,
) -> None:
    """``cookie: {name: canary, value: "1"}``: ``canary=1`` reaches the routed pool,
    ``canary=0`` and no cookie follow the weights (all stable here); removing the route sends
    ``canary=1`` back to the weights.

    Mutation tried: nginx and HAProxy routers ignoring the value (the plain form's "any
    value" map): fails, ``canary=0`` reaches the canary."""
    r = router(valued.router_config())
    asyncio.run(r.set_weights({"stable": 100, "canary": 0}))
    asyncio.run(r.set_cookie_route("canary"))
    assert asyncio.run(r.get_cookie_route()) == "canary"
    one = load(valued.url, rps=200, duration=0.5, cookie="canary=1")
    assert one.failed == 0 and one.by_body == {"canary": one.total}
    for cookie in ("canary=0", "canary=10", None):
        other = load(valued.url, rps=200, duration=0.3, cookie=cookie)
        assert other.failed == 0 and other.by_body == {"stable": other.total}, cookie
    asyncio.run(r.set_cookie_route(None))
    assert asyncio.run(r.get_cookie_route()) is None
    back = load(valued.url, rps=200, duration=0.3, cookie="canary=1")
    assert back.by_body == {"stable": back.total}


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_a_plain_cookie_route_still_routes_any_value(
    kind: str, ngx: NginxServer, hap: HaproxyServer
) -> None:
    server: NginxServer | HaproxyServer = ngx if kind == "nginx" else hap
    r = router(server.router_config())
    asyncio.run(r.set_weights({"stable": 100, "canary": 0}))
    asyncio.run(r.set_cookie_route("canary"))
    try:
        for cookie in ("canary=1", "canary=0"):
            res = load(server.url, rps=200, duration=0.3, cookie=cookie)
            assert res.failed == 0 and res.by_body == {"canary": res.total}, cookie
    finally:
        asyncio.run(r.set_cookie_route(None))
