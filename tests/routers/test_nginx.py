"""The nginx router against a real nginx in front of two real app versions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.routers.conftest import (
    load,
    pools_of,
    router,
    switch_under_load,
    within_binomial,
)
from tminus.routers.base import RouterError
from tminus.routers.nginx import parse_include, render_include
from tminus.testing.app import AppProcess
from tminus.testing.nginx import NginxServer


def test_weights_are_applied_and_seen_in_real_traffic(ngx: NginxServer) -> None:
    config_before = ngx.config.read_bytes()
    r = router(ngx.router_config())
    assert asyncio.run(r.get_weights()) == {"stable": 100, "canary": 0}
    assert asyncio.run(r.verify()) == []
    asyncio.run(r.set_weights({"stable": 90, "canary": 10}))
    assert asyncio.run(r.get_weights()) == {"stable": 90, "canary": 10}
    text = ngx.include.read_text()
    assert "weight=9;" in text and "weight=1;" in text
    res = load(ngx.url, rps=500, duration=4)
    assert res.failed == 0 and res.total == 2000
    assert within_binomial(res.by_body["canary"], res.total, 0.10), res.by_body
    assert res.by_body["stable"] + res.by_body["canary"] == res.total
    # a pool at 0 stays in the file, marked down, and gets nothing
    asyncio.run(r.set_weights({"stable": 0, "canary": 100}))
    assert "down;" in ngx.include.read_text()
    res = load(ngx.url, rps=400, duration=0.5)
    assert res.by_body == {"canary": res.total} and res.failed == 0
    assert ngx.config.read_bytes() == config_before, "tminus must not touch the main config"


def test_a_change_nginx_refuses_is_rolled_back_and_the_old_config_keeps_serving(
    apps: dict[str, AppProcess], ngx: NginxServer
) -> None:
    r = router(ngx.router_config())
    asyncio.run(r.set_weights({"stable": 100, "canary": 0}))
    good = ngx.include.read_bytes()
    workers = ngx.workers()
    # a typo in the plan: a canary server nginx cannot resolve
    typo = ngx.router_config(
        pools={"stable": [apps["stable"].address], "canary": ["canary-host.invalid:8080"]}
    )
    with pytest.raises(RouterError, match="host not found") as err:
        asyncio.run(router(typo).set_weights({"stable": 50, "canary": 50}))
    assert "previous one is back" in str(err.value)
    assert ngx.include.read_bytes() == good
    assert ngx.workers() == workers, "nginx must not have been reloaded"
    res = load(ngx.url, rps=300, duration=0.5)
    assert res.failed == 0 and res.by_body == {"stable": res.total}


def test_cookie_canary_reaches_only_users_with_the_cookie(ngx: NginxServer) -> None:
    r = router(ngx.router_config())
    asyncio.run(r.set_weights({"stable": 100, "canary": 0}))
    asyncio.run(r.set_cookie_route("canary"))
    assert parse_include(ngx.include.read_text(), "backend", ngx.pools)[1] == "canary"
    with_cookie = load(ngx.url, rps=400, duration=0.5, cookie="canary=1")
    others = load(ngx.url, rps=400, duration=0.5, cookie="session=abc")
    empty = load(ngx.url, rps=200, duration=0.5, cookie="canary=")
    assert with_cookie.by_body == {"canary": with_cookie.total} and with_cookie.failed == 0
    assert others.by_body == {"stable": others.total} and others.failed == 0
    assert empty.by_body == {"stable": empty.total}
    # weights and the cookie route are independent: 90/10 for everyone else
    asyncio.run(r.set_weights({"stable": 90, "canary": 10}))
    assert asyncio.run(r.get_weights()) == {"stable": 90, "canary": 10}
    with_cookie = load(ngx.url, rps=400, duration=0.5, cookie="canary=yes")
    assert with_cookie.by_body == {"canary": with_cookie.total}
    asyncio.run(r.set_cookie_route(None))
    asyncio.run(r.set_weights({"stable": 100, "canary": 0}))
    with_cookie = load(ngx.url, rps=400, duration=0.5, cookie="canary=1")
    assert with_cookie.by_body == {"stable": with_cookie.total}


@pytest.mark.timeout(120)
def test_blue_green_switches_under_load_fail_no_request(apps: dict[str, AppProcess]) -> None:
    # Requests take 30 ms, so every reload finds requests in flight; old workers finish them.
    # Client keep-alive is on: a graceful reload closes *idle* keep-alive connections, and the
    # load generator, like browsers and urllib3, sends a request again when a reused
    # connection was closed before any byte of the answer (see docs/routers.md).
    for app in apps.values():
        app.set(latency=0.03)
    with NginxServer(pools=pools_of(apps)) as server:
        r = router(server.router_config())
        res, last, final = asyncio.run(switch_under_load(r, server.url, switches=6))
        log = server.log_tail()
    assert res.total >= 300 * 0.6 * 7
    assert res.failed == 0, ([(f.started, f.status) for f in res.failures()][:5], log)
    assert res.by_body["stable"] > 100 and res.by_body["canary"] > 100
    after = [q for q in res.requests if q.started > last + 0.01]
    assert after and all(q.body.strip() == final for q in after), "the last switch must hold"


def test_verify_finds_a_config_that_does_not_include_the_file(
    apps: dict[str, AppProcess], tmp_path: Path
) -> None:
    other = tmp_path / "not-included.conf"
    other.write_text(render_include("t", "backend", pools_of(apps), {"stable": 100}))
    with NginxServer(pools=pools_of(apps)) as server:
        problems = asyncio.run(router(server.router_config(include_file=str(other))).verify())
    assert any("does not include" in p for p in problems), problems


def test_render_and_parse_round_trip() -> None:
    pools = {"blue": ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"], "green": ["10.0.0.4:80"]}
    for split in ({"blue": 100, "green": 0}, {"blue": 33, "green": 67}, {"blue": 5, "green": 95}):
        text = render_include("edge", "shop", pools, split, "beta", "green")
        assert parse_include(text, "shop", pools) == (split, "green")
    text = render_include("edge", "shop", pools, {"blue": 95, "green": 5})
    assert "server 10.0.0.1:80 weight=19;" in text and "server 10.0.0.4:80 weight=3;" in text
