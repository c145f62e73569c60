"""``kind: canary`` end to end: real nginx in front of two real app versions, a real Prometheus
scraping them, deploys through the real CLI while a load generator sends user traffic.

- a healthy canary is promoted through every step to 100% (read back from nginx; real
  traffic all on the canary);
- a failing canary is rolled back: traffic back to stable in one router call, within a second
  of the detection, before the phase's rollback steps; stable then serves everything;
- Prometheus unreachable: the analysis has no verdict, the deploy pauses and the weight never
  goes above the step reached; a resume analyses again, ``--rollback`` sends traffic back;
- ``pause: manual`` holds the weight with the analysis running until ``tminus approve``;
- a metric source that dies in the last seconds of a hold (fewer errors than the limit) does
  not promote: the deploy pauses at the weight it holds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm
from tminus.store.store import Store
from tminus.testing.app import AppProcess, free_port
from tminus.testing.load import LoadResult, constant_rate
from tminus.testing.nginx import NginxServer
from tminus.testing.prometheus import PrometheusServer

# The canary's share of 5xx over the last 3 s, from what Prometheus scraped (every 0.5 s).
ERROR_RATE = (
    'sum(rate(http_requests_total{version="canary",code="500"}[3s]))'
    ' / sum(rate(http_requests_total{version="canary"}[3s]))'
)


@pytest.fixture(scope="module")
def apps() -> Iterator[tuple[AppProcess, AppProcess]]:
    with AppProcess("stable") as stable, AppProcess("canary") as canary:
        yield stable, canary


@pytest.fixture(scope="module")
def prometheus(apps: tuple[AppProcess, AppProcess]) -> Iterator[PrometheusServer]:
    stable, canary = apps
    with PrometheusServer([stable.address, canary.address], scrape_interval=0.5) as prom:
        yield prom


@pytest.fixture
def nginx(apps: tuple[AppProcess, AppProcess]) -> Iterator[NginxServer]:
    stable, canary = apps
    stable.set(error_rate=0.0, latency=0.0)
    canary.set(error_rate=0.0, latency=0.0)
    pools = {"stable": [stable.address], "canary": [canary.address]}
    with NginxServer(pools) as ngx:
        yield ngx


def plan(
    nginx: NginxServer,
    prom_url: str,
    steps: list[dict[str, Any]],
    *,
    analysis: dict[str, Any] | None = None,
    rollback_marker: Path | None = None,
) -> str:
    check = {
        "name": "Canary 5xx share",
        "source": "prometheus",
        "target": "prom",
        "query": ERROR_RATE,
        "interval": "500ms",
        # the first seconds of a new weight have no canary requests in the window yet
        "inconclusive_limit": 8,
        "expect": "< 5%",
        "critical": ">= 20%",
        **(analysis or {}),
    }
    phase: dict[str, Any] = {
        "name": "Roll out",
        "steps": [
            {
                "kind": "canary",
                "id": "rollout",
                "router": "web",
                "stable": "stable",
                "canary": "canary",
                "steps": steps,
                "analysis": ["canary_errors"],
            }
        ],
    }
    if rollback_marker is not None:
        phase["rollback"] = [
            {"kind": "run", "name": "Rollback step", "command": f"date +%s.%N > {rollback_marker}"}
        ]
    doc = {
        "tminus": 1,
        "name": "canary-test",
        "roles": {"ops": {}},
        "targets": {
            "routers": {"web": nginx.router_config()},
            "metrics": {"prom": {"kind": "prometheus", "url": prom_url}},
        },
        "checks": {"canary_errors": check},
        "phases": [phase],
    }
    return json.dumps(doc, indent=1)  # JSON is YAML


async def tminus(tm: Tm, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tminus",
        *args,
        cwd=tm.cwd,
        env=tm.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def deploy_under_load(
    tm: Tm, url: str, rps: float, *args: str
) -> tuple[int, str, LoadResult]:
    """Run ``tminus ARGS`` while ``rps`` requests per second go to ``url``; the load stops
    once tminus has exited."""
    stop = asyncio.Event()
    load = asyncio.create_task(constant_rate(url, rps=rps, duration=120, stop=stop))
    await asyncio.sleep(0.5)
    try:
        code, out = await tminus(tm, *args)
    finally:
        stop.set()
    return code, out, await load


def events(tm: Tm, deploy: str) -> list[dict[str, Any]]:
    return Store(f"sqlite:///{tm.cwd / '.tminus' / 'state.db'}").events(deploy)


def step_row(tm: Tm, deploy: str, key: str = "phase/0/step/0") -> dict[str, Any]:
    row = Store(f"sqlite:///{tm.cwd / '.tminus' / 'state.db'}").step_rows(deploy)[key]
    return dict(row)


async def nginx_weights(nginx: NginxServer) -> dict[str, int]:
    from tminus.routers.nginx import parse_include

    weights, _ = parse_include(nginx.include.read_text(), nginx.upstream, nginx.pools)
    return weights


def test_healthy_canary_is_promoted_to_100(
    tm: Tm, nginx: NginxServer, prometheus: PrometheusServer
) -> None:
    steps = [{"weight": 10, "pause": "2s"}, {"weight": 50, "pause": "2s"}]
    (tm.cwd / "plan.yaml").write_text(plan(nginx, prometheus.url, steps))

    async def go() -> tuple[int, str, LoadResult]:
        return await deploy_under_load(tm, nginx.url, 150, "run", "plan.yaml")

    code, out, load = asyncio.run(go())
    assert code == 0, out
    assert asyncio.run(nginx_weights(nginx)) == {"stable": 0, "canary": 100}
    assert load.failed == 0
    # each weight was reached in order, and held for its pause with analysis running
    reached = [e for e in events(tm, "canary-test-1") if e["type"] == "canary.weight"]
    assert [e["data"]["weight"] for e in reached] == [10, 50]
    art = step_row(tm, "canary-test-1")["artifacts"]
    assert [a["status"] for a in art["analysis"]] == ["successful", "successful"]
    assert art["weights"] == {"stable": 0, "canary": 100}
    # the traffic itself moved: some canary at 10% and 50%, and only canary afterwards
    assert load.by_body["canary"] > 0 and load.by_body["stable"] > 0
    after = asyncio.run(constant_rate(nginx.url, rps=100, duration=1.0))
    assert after.failed == 0 and set(after.by_body) == {"canary"}


def test_failing_canary_is_rolled_back_within_a_second(
    tm: Tm, nginx: NginxServer, prometheus: PrometheusServer, apps: tuple[AppProcess, AppProcess]
) -> None:
    """Also: the ``reached`` artifact keeps the weight and ramp step reached. Mutation tried:
    reading it after the progress is cleared (as before): fails, ``reached`` is empty."""
    _, canary = apps
    marker = tm.cwd / "rollback-step-ran"
    steps = [{"weight": 20, "pause": "20s"}, {"weight": 60, "pause": "5s"}]
    (tm.cwd / "plan.yaml").write_text(plan(nginx, prometheus.url, steps, rollback_marker=marker))
    canary.set(error_rate=1.0)  # the new version fails every request

    async def go() -> tuple[int, str, LoadResult]:
        return await deploy_under_load(tm, nginx.url, 150, "run", "plan.yaml")

    code, out, load = asyncio.run(go())
    assert code == 1, out
    assert Tm(tm.cwd).json("status", "canary-test-1")["state"] == "rolled_back"
    assert asyncio.run(nginx_weights(nginx)) == {"stable": 100, "canary": 0}
    art = step_row(tm, "canary-test-1")["artifacts"]
    detected, restored = art["fault_detected_at"], art["traffic_restored_at"]
    assert 0 <= restored - detected < 1.0, art
    assert art["failed_at_weight"] == 20
    # what was reached survives the rollback (weight and ramp step), for the record
    assert [(r["weight"], r["step"]) for r in art["reached"]] == [(20, 1)], art["reached"]
    # traffic went back to stable first, then the phase's rollback step ran
    assert float(marker.read_text()) > restored
    types = [e["type"] for e in events(tm, "canary-test-1")]
    assert types.index("canary.traffic_restored") < types.index("deploy.rolling_back")
    assert not any(
        e["data"]["weight"] == 60
        for e in events(tm, "canary-test-1")
        if e["type"] == "canary.weight"
    )
    # the failures were canary requests, none after traffic was restored (plus in-flight)
    failures = load.failures()
    assert failures and all(r.started < restored + 0.1 for r in failures)
    after = asyncio.run(constant_rate(nginx.url, rps=100, duration=1.0))
    assert after.failed == 0 and set(after.by_body) == {"stable"}


def test_prometheus_unreachable_pauses_and_never_promotes(tm: Tm, nginx: NginxServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    steps = [{"weight": 20, "pause": "1s"}, {"weight": 100, "pause": "1s"}]
    (tm.cwd / "plan.yaml").write_text(
        plan(nginx, dead, steps, analysis={"interval": "200ms", "timeout": "1s"})
    )
    proc = tm("run", "plan.yaml")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    info = tm.json("status", "canary-test-1")
    assert info["state"] == "paused"
    assert "holds 20%" in info["reason"]
    assert asyncio.run(nginx_weights(nginx)) == {"stable": 80, "canary": 20}
    # resuming analyses again: still no Prometheus, still paused, still at 20%
    again = tm("resume", "canary-test-1")
    assert again.returncode == 3, again.stdout + again.stderr
    assert asyncio.run(nginx_weights(nginx)) == {"stable": 80, "canary": 20}
    weights = [
        e["data"]["weight"] for e in events(tm, "canary-test-1") if e["type"] == "canary.weight"
    ]
    assert weights == [20, 20]
    # the operator gives up: the compensation sends all traffic back to stable
    back = tm("resume", "canary-test-1", "--rollback")
    assert back.returncode == 1, back.stdout + back.stderr
    assert tm.json("status", "canary-test-1")["state"] == "rolled_back"
    assert asyncio.run(nginx_weights(nginx)) == {"stable": 100, "canary": 0}


def test_manual_pause_holds_with_analysis_until_promoted(
    tm: Tm, nginx: NginxServer, prometheus: PrometheusServer
) -> None:
    steps = [{"weight": 30, "pause": "manual"}]
    (tm.cwd / "plan.yaml").write_text(plan(nginx, prometheus.url, steps))

    async def go() -> tuple[int, str, LoadResult, float]:
        stop = asyncio.Event()
        load = asyncio.create_task(constant_rate(nginx.url, rps=100, duration=60, stop=stop))
        run = asyncio.create_task(tminus(tm, "run", "plan.yaml"))
        deadline = time.monotonic() + 20
        while (await nginx_weights(nginx))["canary"] != 30:
            assert time.monotonic() < deadline and not run.done()
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)  # held, with the analysis measuring
        assert not run.done()
        assert (await nginx_weights(nginx))["canary"] == 30
        approved = time.time()
        code, out = await tminus(tm, "approve", "canary-test-1", "--role", "ops", "--as", "bob")
        assert code == 0, out
        code, out = await run
        stop.set()
        return code, out, await load, approved

    code, out, load, approved = asyncio.run(go())
    assert code == 0, out
    assert asyncio.run(nginx_weights(nginx)) == {"stable": 0, "canary": 100}
    assert load.failed == 0
    evs = events(tm, "canary-test-1")
    promoted = [e for e in evs if e["type"] == "canary.promoted"]
    assert promoted and "bob" in promoted[0]["message"]
    art = step_row(tm, "canary-test-1")["artifacts"]
    assert art["analysis"][0]["status"] == "successful"  # measured while held
    assert promoted[0]["ts"].timestamp() >= approved


def test_abort_during_a_manual_hold_stops_within_a_second(
    tm: Tm, nginx: NginxServer, prometheus: PrometheusServer
) -> None:
    """`tminus abort` while a canary holds 30% (``pause: manual``, analysis running): the
    runner stops the hold within about a second and the deploy ends aborted; the weight stays
    where it was (an abort stops, it does not roll back)."""
    steps = [{"weight": 30, "pause": "manual"}]
    (tm.cwd / "plan.yaml").write_text(plan(nginx, prometheus.url, steps))

    async def go() -> tuple[int, str]:
        run = asyncio.create_task(tminus(tm, "run", "plan.yaml"))
        deadline = time.monotonic() + 20
        while (await nginx_weights(nginx))["canary"] != 30:
            assert time.monotonic() < deadline and not run.done()
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        code, out = await tminus(tm, "abort", "canary-test-1", "--as", "carol")
        assert code == 0, out
        return await asyncio.wait_for(run, 15)

    code, out = asyncio.run(go())
    assert code == 1, out
    info = Tm(tm.cwd).json("status", "canary-test-1")
    assert info["state"] == "aborted", info
    evs = events(tm, "canary-test-1")
    asked = next(e for e in evs if e["type"] == "deploy.abort_requested")
    ended = next(e for e in evs if e["type"] == "deploy.aborted")
    assert (ended["ts"] - asked["ts"]).total_seconds() < 1.5
    assert asyncio.run(nginx_weights(nginx)) == {"stable": 70, "canary": 30}


def test_metric_source_dying_late_in_a_hold_never_promotes(
    tm: Tm, nginx: NginxServer, apps: tuple[AppProcess, AppProcess]
) -> None:
    """Prometheus answers for most of a 6 s hold at 50%, then dies 1.2 s before its end: two
    or three errors, fewer than ``consecutive_error_limit`` (4). The canary must not be
    promoted on that: the deploy pauses, the weight stays at 50%.

    Mutation tried: ``run_analysis`` ending as before (successful once every check passed at
    least once and no limit was exceeded, without the latest-measurement / final-interval
    rule): fails, "1 check(s) passed" and 100% of the traffic moved with Prometheus down."""
    stable, canary = apps
    with PrometheusServer([stable.address, canary.address], scrape_interval=0.5) as prom:
        steps = [{"weight": 50, "pause": "6s"}]
        text = plan(nginx, prom.url, steps, analysis={"timeout": "300ms"})
        (tm.cwd / "plan.yaml").write_text(text)

        async def go() -> tuple[int, str]:
            stop = asyncio.Event()
            load = asyncio.create_task(constant_rate(nginx.url, rps=100, duration=60, stop=stop))
            run = asyncio.create_task(tminus(tm, "run", "plan.yaml"))
            deadline = time.monotonic() + 20
            while (await nginx_weights(nginx))["canary"] != 50:
                assert time.monotonic() < deadline and not run.done()
                await asyncio.sleep(0.05)
            await asyncio.sleep(4.8)
            assert not run.done()
            await asyncio.to_thread(prom.stop)
            code, out = await asyncio.wait_for(run, 30)
            stop.set()
            await load
            return code, out

        code, out = asyncio.run(go())
    assert code == 3, out
    info = Tm(tm.cwd).json("status", "canary-test-1")
    assert info["state"] == "paused" and "holds 50%" in info["reason"], info
    assert "final interval" in info["reason"], info
    assert asyncio.run(nginx_weights(nginx)) == {"stable": 50, "canary": 50}
    assert not [e for e in events(tm, "canary-test-1") if e["type"] == "canary.promoted_full"]
