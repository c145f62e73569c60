"""The nginx router's upstream keep-alive and its urgent (reload-first) change, against a real
nginx in front of two real app processes that count the connections they accept."""

from __future__ import annotations

import asyncio
import http.client
import time
from urllib.parse import urlsplit

import pytest

from tests.routers.conftest import load, pools_of, router
from tminus.routers.base import RouterError
from tminus.routers.nginx import DEFAULT_KEEPALIVE, render_include
from tminus.testing.app import AppProcess
from tminus.testing.load import LoadResult, constant_rate
from tminus.testing.nginx import NginxServer


def _counts(apps: dict[str, AppProcess]) -> dict[str, tuple[int, int]]:
    """(requests answered, connections accepted) per app; each reading opens one connection."""
    out = {}
    for name, app in apps.items():
        info = app.info()
        out[name] = (int(str(info["requests"])), int(str(info["connections"])))
    return out


def _sequential(url: str, n: int) -> list[str]:
    """``n`` requests one after the other on one client keep-alive connection (so at most one
    request is ever in flight, whatever the machine's load): the bodies."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=10)
    bodies = []
    try:
        for _ in range(n):
            conn.request("GET", "/")
            resp = conn.getresponse()
            bodies.append(resp.read().decode().strip())
            assert resp.status == 200
    finally:
        conn.close()
    return bodies


def test_upstream_connections_are_reused(apps: dict[str, AppProcess]) -> None:
    """With the router's default ``keepalive`` nginx keeps its upstream connections: 200
    proxied requests, one at a time, reach the two apps on a connection or two each, not on
    200 new ones. (Mutations tried: ``keepalive`` left out of the upstream block: each app
    accepted one connection per request and the test failed on the count; the test nginx
    without ``proxy_http_version 1.1`` in its location: ``verify`` reported it and the test
    failed there.)"""
    assert DEFAULT_KEEPALIVE > 0
    with NginxServer(pools=pools_of(apps)) as server:
        assert f"keepalive {DEFAULT_KEEPALIVE};" in server.include.read_text()
        r = router(server.router_config())
        asyncio.run(r.set_weights({"stable": 50, "canary": 50}))
        assert asyncio.run(r.verify()) == []
        before = _counts(apps)
        bodies = _sequential(server.url, 200)
        after = _counts(apps)
    assert sorted(set(bodies)) == ["canary", "stable"]
    served = sum(after[n][0] - before[n][0] for n in apps)
    opened = {n: after[n][1] - before[n][1] - 1 for n in apps}  # less the readings' own
    assert served == 200, (before, after)
    assert all(1 <= k <= 2 for k in opened.values()), opened


def test_without_keepalive_every_request_is_a_new_connection(
    apps: dict[str, AppProcess],
) -> None:
    """The control for the test above: ``keepalive 0`` (the include as the router renders it
    for ``keepalive: 0``) opens one upstream connection per request, so the counting can tell
    reuse from no reuse."""
    with NginxServer(pools=pools_of(apps), keepalive=0) as server:
        assert "keepalive" not in server.include.read_text()
        before = _counts(apps)
        bodies = _sequential(server.url, 100)
        after = _counts(apps)
    opened = sum(after[n][1] - before[n][1] - 1 for n in apps)
    assert len(bodies) == 100 and opened == 100


async def _switch(r: object, url: str, switches: int, every: float) -> tuple[LoadResult, str]:
    stop = asyncio.Event()
    task = asyncio.create_task(constant_rate(url + "/", rps=200, duration=600, stop=stop))
    await asyncio.sleep(every)
    final = "stable"
    for i in range(switches):
        final = "canary" if i % 2 == 0 else "stable"
        other = "stable" if final == "canary" else "canary"
        # alternately the ordinary order (nginx -t, reload) and the urgent one (reload first)
        await r.set_weights({final: 100, other: 0}, urgent=bool(i % 2))  # type: ignore[attr-defined]
        await asyncio.sleep(every)
    stop.set()
    return await task, final


@pytest.mark.timeout(300)
def test_reloads_under_load_with_keepalive_lose_no_request(apps: dict[str, AppProcess]) -> None:
    """Six switches (half of them urgent: reload first) under 200 rps of 20 ms requests,
    upstream keep-alive on: old workers finish their in-flight requests on their keep-alive
    upstream connections and close them as they exit; no request fails, and the upstream
    connections are still reused."""
    for app in apps.values():
        app.set(latency=0.02)
    with NginxServer(pools=pools_of(apps)) as server:
        r = router(server.router_config())
        before = _counts(apps)
        res, final = asyncio.run(_switch(r, server.url, switches=6, every=0.5))
        after = _counts(apps)
        log = server.log_tail()
    assert res.total >= 200 * 3.5 * 0.6
    assert res.failed == 0, ([(f.started, f.status) for f in res.failures()][:5], log)
    assert res.by_body["stable"] > 50 and res.by_body["canary"] > 50
    assert res.by_body[final] > 0
    opened = sum(after[n][1] - before[n][1] - 1 for n in apps)
    # reused (how much depends on how many requests pile up on the machine: not asserted)
    assert opened < res.total, f"{opened} upstream connections for {res.total} requests"


def test_an_urgent_change_nginx_refuses_puts_the_file_back(
    apps: dict[str, AppProcess], ngx: NginxServer
) -> None:
    """Urgent order: the master is signalled before ``nginx -t``; a file nginx refuses is put
    back at once (not after the 15 s wait for new workers), nginx keeps serving the old split
    with the same workers. (Mutation tried: the urgent path ignoring a failed ``nginx -t``:
    the call waited 15 s and failed with "did not start new workers", and the test failed on
    its message and its duration.)"""
    r = router(ngx.router_config())
    asyncio.run(r.set_weights({"stable": 100, "canary": 0}))
    good = ngx.include.read_bytes()
    deadline = time.monotonic() + 30
    while len(workers := ngx.workers()) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the reload's old worker is still finishing
    typo = ngx.router_config(
        pools={"stable": [apps["stable"].address], "canary": ["canary-host.invalid:8080"]}
    )
    t0 = time.monotonic()
    with pytest.raises(RouterError, match="host not found") as err:
        asyncio.run(router(typo).set_weights({"stable": 0, "canary": 100}, urgent=True))
    assert time.monotonic() - t0 < 10
    assert "previous one is back" in str(err.value)
    assert ngx.include.read_bytes() == good
    assert ngx.workers() == workers, "the master must have kept its workers"
    res = load(ngx.url, rps=300, duration=0.5)
    assert res.failed == 0 and res.by_body == {"stable": res.total}


def test_verify_asks_for_http_1_1_to_the_upstream(ngx: NginxServer) -> None:
    """``keepalive`` without ``proxy_http_version 1.1`` does nothing in nginx: verify says so."""
    r = router(ngx.router_config())
    assert asyncio.run(r.verify()) == []
    text = ngx.config.read_text()
    ngx.config.write_text(
        text.replace("proxy_http_version 1.1;", "").replace('proxy_set_header Connection "";', "")
    )
    problems = asyncio.run(r.verify())
    assert any("proxy_http_version 1.1" in p and "Connection" in p for p in problems), problems


def test_keepalive_is_written_in_every_upstream() -> None:
    pools = {"blue": ["10.0.0.1:80"], "green": ["10.0.0.2:80"]}
    text = render_include("edge", "shop", pools, {"blue": 100}, "beta", keepalive=8)
    assert text.count("keepalive 8;") == 3  # shop, shop__blue, shop__green
    assert "keepalive" not in render_include("edge", "shop", pools, {"blue": 100}, keepalive=0)
