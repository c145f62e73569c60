"""The HAProxy router against a real HAProxy (runtime API on its stats socket) in front of two
real app versions: one-call splits, drain, cookie routing, and restarts from the rewritten
config file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.routers.conftest import load, router, switch_under_load, within_binomial
from tminus.routers.base import RouterError
from tminus.routers.haproxy import _CHECKED_SHAPES, ServerState, rewrite_config, server_weights
from tminus.testing.app import AppProcess
from tminus.testing.haproxy import HaproxyServer
from tminus.testing.load import constant_rate


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b, strict=True) if x != y]


def test_split_in_one_call_seen_in_traffic_and_kept_by_a_restart(hap: HaproxyServer) -> None:
    r = router(hap.router_config(), "lb")
    assert asyncio.run(r.verify()) == []
    before = hap.config.read_text()
    asyncio.run(r.set_weights({"stable": 90, "canary": 10}))
    assert asyncio.run(r.get_weights()) == {"stable": 90, "canary": 10}
    states = asyncio.run(r.servers_state())
    assert (states["stable1"].weight, states["canary1"].weight) == (9, 1)
    assert states["canary1"].state == states["stable1"].state == "ready"
    after = hap.config.read_text()
    assert changed_lines(before, after) == [
        (
            f"    server stable1 {hap.pools['stable'][0]} weight 1  # pool stable",
            f"    server stable1 {hap.pools['stable'][0]} weight 9  # pool stable",
        ),
        (
            f"    server canary1 {hap.pools['canary'][0]} weight 0  # pool canary",
            f"    server canary1 {hap.pools['canary'][0]} weight 1  # pool canary",
        ),
    ]
    res = load(hap.url, rps=500, duration=4)
    assert res.failed == 0 and res.total == 2000
    assert within_binomial(res.by_body["canary"], res.total, 0.10), res.by_body
    hap.restart()
    assert asyncio.run(r.get_weights()) == {"stable": 90, "canary": 10}
    res = load(hap.url, rps=500, duration=2)
    assert res.failed == 0 and within_binomial(res.by_body["canary"], res.total, 0.10)


def test_a_pool_at_zero_drains_and_in_flight_requests_finish(
    apps: dict[str, AppProcess], hap: HaproxyServer
) -> None:
    r = router(hap.router_config(), "lb")
    asyncio.run(r.set_weights({"stable": 50, "canary": 50}))
    apps["canary"].set(latency=1.0)

    async def drain_while_busy() -> tuple[int, int, dict[str, ServerState]]:
        slow = asyncio.create_task(constant_rate(hap.url + "/", rps=20, duration=0.3))
        await asyncio.sleep(0.4)  # canary requests are now in flight for another ~0.9 s
        await r.set_weights({"stable": 100, "canary": 0})
        res = await slow
        return res.failed, res.by_body["canary"], await r.servers_state()

    failed, canary_done, states = asyncio.run(drain_while_busy())
    assert failed == 0 and canary_done > 0, "requests in flight on a drained server finish"
    assert states["canary1"].state == "drain" and states["stable1"].state == "ready"
    apps["canary"].set(latency=0.0)
    res = load(hap.url, rps=400, duration=0.5)
    assert res.by_body == {"stable": res.total} and res.failed == 0
    assert "weight 0" in hap.config.read_text().split("server canary1")[1].splitlines()[0]
    hap.restart()
    assert asyncio.run(r.get_weights()) == {"stable": 100, "canary": 0}
    res = load(hap.url, rps=400, duration=0.5)
    assert res.by_body == {"stable": res.total}


def test_cookie_canary_reaches_only_users_with_the_cookie(hap: HaproxyServer) -> None:
    r = router(hap.router_config(), "lb")
    asyncio.run(r.set_weights({"stable": 100, "canary": 0}))
    asyncio.run(r.set_cookie_route("canary"))
    assert asyncio.run(r.get_cookie_route()) == "canary"
    with_cookie = load(hap.url, rps=400, duration=0.5, cookie="canary=1")
    others = load(hap.url, rps=400, duration=0.5, cookie="session=abc")
    assert with_cookie.by_body == {"canary": with_cookie.total} and with_cookie.failed == 0
    assert others.by_body == {"stable": others.total} and others.failed == 0
    assert hap.cookie_map.read_text() == "route app_canary\n"
    hap.restart()  # the map file on disk keeps the route
    with_cookie = load(hap.url, rps=400, duration=0.5, cookie="canary=1")
    assert with_cookie.by_body == {"canary": with_cookie.total}
    asyncio.run(r.set_cookie_route(None))
    assert asyncio.run(r.get_cookie_route()) is None and hap.cookie_map.read_text() == ""
    with_cookie = load(hap.url, rps=400, duration=0.5, cookie="canary=1")
    assert with_cookie.by_body == {"stable": with_cookie.total}


@pytest.mark.timeout(120)
def test_blue_green_switches_under_load_fail_no_request(
    apps: dict[str, AppProcess], hap: HaproxyServer
) -> None:
    for app in apps.values():
        app.set(latency=0.03)
    r = router(hap.router_config(), "lb")
    res, last, final = asyncio.run(switch_under_load(r, hap.url, switches=6))
    assert res.total >= 300 * 0.6 * 7
    assert res.failed == 0, [(f.started, f.status) for f in res.failures()][:5]
    assert res.by_body["stable"] > 100 and res.by_body["canary"] > 100
    after = [q for q in res.requests if q.started > last + 0.01]
    assert after and all(q.body.strip() == final for q in after), "the last switch must hold"


def test_an_unknown_server_changes_nothing(hap: HaproxyServer) -> None:
    r = router(hap.router_config(), "lb")
    asyncio.run(r.set_weights({"stable": 80, "canary": 20}))
    config = hap.config.read_text()
    bad = router(hap.router_config(pools={"stable": ["stable1"], "canary": ["canary9"]}), "lb")
    with pytest.raises(RouterError, match="no server 'canary9'"):
        asyncio.run(bad.set_weights({"stable": 0, "canary": 100}))
    assert asyncio.run(r.get_weights()) == {"stable": 80, "canary": 20}
    assert hap.config.read_text() == config
    problems = asyncio.run(bad.verify())
    assert any("canary9" in p for p in problems), problems


def test_a_dead_socket_is_a_clear_error(hap: HaproxyServer) -> None:
    r = router(hap.router_config(socket=str(hap.dir / "nope.sock")), "lb")
    t0 = time.monotonic()
    with pytest.raises(RouterError, match="cannot reach the HAProxy stats socket"):
        asyncio.run(r.get_weights())
    assert time.monotonic() - t0 < 5


def test_rewrite_config_touches_only_the_backend_servers() -> None:
    text = (
        "global\n    maxconn 100\n"
        "backend other\n    server web1 10.0.0.1:80 weight 5\n"
        "backend shop\r\n"
        "    server web1 10.0.0.1:80 check weight 7 disabled  # keep me\r\n"
        '    server web2 10.0.0.2:80 check inter "2s #x"\r\n'
        "    server web3 10.0.0.3:80\n"
        "listen stats\n    server web1 10.0.0.1:80 weight 3\n"
    )
    out = rewrite_config(
        text,
        "shop",
        {"web1": 200, "web2": 0, "web3": 12},
        {"web1": True, "web2": False, "web3": True},
    )
    assert out == (
        "global\n    maxconn 100\n"
        "backend other\n    server web1 10.0.0.1:80 weight 5\n"
        "backend shop\r\n"
        "    server web1 10.0.0.1:80 check weight 200  # keep me\r\n"
        '    server web2 10.0.0.2:80 check inter "2s #x" weight 0\r\n'
        "    server web3 10.0.0.3:80 weight 12\n"
        "listen stats\n    server web1 10.0.0.1:80 weight 3\n"
    )
    with pytest.raises(RouterError, match="no 'server' line for web9"):
        rewrite_config(text, "shop", {"web9": 1}, {"web9": True})


def test_server_weights_fit_haproxy_range() -> None:
    pools = {"a": ["a1"], "b": ["b1"]}
    assert server_weights({"a": 90, "b": 10}, pools) == {"a1": 9, "b1": 1}
    assert server_weights({"a": 100, "b": 0}, pools) == {"a1": 1, "b1": 0}
    big = {"a": [f"a{i}" for i in range(7)], "b": [f"b{i}" for i in range(8)]}
    w = server_weights({"a": 99, "b": 1}, big)
    assert max(w.values()) <= 256 and min(w.values()) >= 1
    share = sum(w[s] for s in big["b"]) / sum(w.values())
    assert 0.005 < share < 0.02


def test_an_urgent_split_moves_traffic_before_the_config_check(
    hap: HaproxyServer, tmp_path: Path
) -> None:
    """``urgent`` (a rollback's restore): the runtime change comes first and ``haproxy -c``
    after; a normal change checks first. The router's ``haproxy`` is a wrapper that takes 1.5 s
    for each check, so the order shows in the weights read while ``set_weights`` still runs.
    Mutation: ``urgent`` ignored (the check before the runtime call in both cases): the urgent
    restore is not seen until the check is over, and this fails. The urgent call returns when
    the traffic moved (what a canary records as ``traffic_restored_at``): within the 0.6 s
    before the check ends; mutation: ``moved`` taken after the config is written → fails."""
    slow = tmp_path / "slow-haproxy"
    slow.write_text(f'#!/bin/sh\nsleep 1.5\nexec {hap.binary} "$@"\n')
    slow.chmod(0o755)
    r = router(hap.router_config(haproxy=str(slow)), "lb")
    _CHECKED_SHAPES.clear()

    moved: dict[bool, tuple[float, float | None]] = {}

    async def seen_during(weights: dict[str, int], urgent: bool) -> dict[str, int]:
        start = time.time()
        task = asyncio.ensure_future(r.set_weights(weights, urgent=urgent))
        await asyncio.sleep(0.6)  # the runtime call takes milliseconds; the check 1.5 s
        assert not task.done()
        mid = await r.get_weights()
        moved[urgent] = (start, await task)
        return dict(mid)

    async def go() -> tuple[dict[str, int], dict[str, int]]:
        forward = await seen_during({"stable": 50, "canary": 50}, urgent=False)
        _CHECKED_SHAPES.clear()  # (else the urgent rewrite, of a shape that passed, is not checked)
        back = await seen_during({"stable": 100, "canary": 0}, urgent=True)
        return forward, back

    forward, back = asyncio.run(go())
    assert forward == {"stable": 100, "canary": 0}  # checked first: nothing changed yet
    assert back == {"stable": 100, "canary": 0}  # urgent: already back
    assert asyncio.run(r.get_weights()) == {"stable": 100, "canary": 0}
    assert "weight 0  # pool canary" in hap.config.read_text()  # persisted after the check
    assert moved[False][1] is None  # checked first: the return is when it moved
    start, at = moved[True]
    assert at is not None and start <= at < start + 0.6, (start, at)


def test_a_rewrite_that_only_moves_weights_is_checked_once(
    hap: HaproxyServer, tmp_path: Path
) -> None:
    """``haproxy -c`` runs for the first rewrite of a config; a rewrite that differs from one
    that passed only in the pools' weights and states is not checked again (a blue/green
    rollout's every switch paid ~30 ms of CPU for it); a config someone edited meanwhile is
    checked again. The router's ``haproxy`` is a wrapper that counts the checks. Mutations:
    no shapes kept (every rewrite checked): the count is 3, not 1; the shape kept per file
    whatever its text (an edit not seen): the edited config is not checked, the count
    stays 1."""
    log = tmp_path / "checks.log"
    counting = tmp_path / "counting-haproxy"
    counting.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {hap.binary} "$@"\n')
    counting.chmod(0o755)
    _CHECKED_SHAPES.clear()
    r = router(hap.router_config(haproxy=str(counting)), "lb")

    def checks() -> int:
        return len(log.read_text().splitlines()) if log.exists() else 0

    for weights in ({"stable": 50, "canary": 50}, {"stable": 0, "canary": 100}):
        asyncio.run(r.set_weights(weights))
    asyncio.run(r.set_weights({"stable": 100, "canary": 0}, urgent=True))
    assert checks() == 1
    assert asyncio.run(r.get_weights()) == {"stable": 100, "canary": 0}
    assert "weight 0  # pool canary" in hap.config.read_text()

    text = hap.config.read_text()
    hap.config.write_text(text.replace("defaults\n", "defaults\n    option httplog\n", 1))
    asyncio.run(r.set_weights({"stable": 90, "canary": 10}))
    assert checks() == 2  # an edited file: checked again
    assert "option httplog" in hap.config.read_text()
