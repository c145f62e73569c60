"""``traffic`` and ``flag`` steps through real deploys (the CLI in a subprocess) against a real
nginx, a real HAProxy, a flagd file and a private Redis: the changes, and a rollback that puts
back exactly what was there before."""

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
from tests.routers.conftest import load, router
from tminus.testing.haproxy import HaproxyServer
from tminus.testing.nginx import NginxServer
from tminus.testing.redis import RedisServer

REDIS_PW = "pw-never-printed-7731"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(password=REDIS_PW) as rs:
        yield rs


def write_plan(
    tmp_path: Path, ngx: NginxServer, hap: HaproxyServer, rs: RedisServer, flags: Path
) -> Path:
    plan: dict[str, Any] = {
        "name": "routing",
        "environment": "test",
        "variables": {"code": "0"},
        "secrets": {"redis_pw": "${env:TEST_REDIS_PW}"},
        "targets": {
            "routers": {
                "edge": ngx.router_config(),
                "lb": hap.router_config(),
                "rollout": {"kind": "flags", "store": "file", "flag": "checkout-v2"},
            },
            "flag_stores": {
                "file": {"kind": "flagd", "path": str(flags)},
                "live": {
                    "kind": "redis",
                    "url": f"redis://:${{redis_pw}}@127.0.0.1:{rs.port}/0",
                    "prefix": "cli:",
                },
            },
        },
        "phases": [
            {
                "name": "shift",
                "steps": [
                    {"kind": "traffic", "router": "edge", "weights": {"stable": 0, "canary": 100}},
                    {"kind": "traffic", "router": "lb", "weights": {"stable": 25, "canary": 75}},
                    {
                        "kind": "traffic",
                        "router": "rollout",
                        "weights": {"stable": 90, "canary": 10},
                    },
                    {"kind": "flag", "store": "live", "flag": "new-ui", "percentage": 25},
                    {"kind": "flag", "store": "file", "flag": "banner", "enabled": False},
                ],
            },
            {"name": "check", "steps": [{"kind": "run", "command": "exit ${code}"}]},
        ],
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


BANNER = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "on",
    "metadata": {"owner": "web"},
}


@pytest.fixture
def setup(
    tmp_path: Path, ngx: NginxServer, hap: HaproxyServer, redis_server: RedisServer
) -> tuple[Tm, Path, Path]:
    flags = tmp_path / "flags.json"
    flags.write_text(json.dumps({"flags": {"banner": BANNER}}, indent=2))
    plan = write_plan(tmp_path, ngx, hap, redis_server, flags)
    return Tm(tmp_path, env={"TEST_REDIS_PW": REDIS_PW}), plan, flags


def test_failed_deploy_rolls_traffic_and_flags_back(
    setup: tuple[Tm, Path, Path], ngx: NginxServer, hap: HaproxyServer, redis_server: RedisServer
) -> None:
    tm, plan, flags = setup
    original_flags = flags.read_text()
    proc = tm("run", str(plan), "--var", "code=1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    deploy = tm.latest()
    assert deploy["state"] == "rolled_back"
    assert asyncio.run(router(ngx.router_config()).get_weights()) == {"stable": 100, "canary": 0}
    assert asyncio.run(router(hap.router_config(), "lb").get_weights()) == {
        "stable": 100,
        "canary": 0,
    }
    for url in (ngx.url, hap.url):
        res = load(url, rps=300, duration=0.5)
        assert res.failed == 0 and res.by_body == {"stable": res.total}
    assert json.loads(flags.read_text()) == json.loads(original_flags)
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert not client.exists("cli:new-ui"), "a flag the deploy created is removed again"
    finally:
        client.close()
    log = tm.json("log", deploy["id"])
    types = [e["type"] for e in log]
    assert types.count("traffic.before") == 3 and types.count("traffic.restored") == 3
    assert types.count("flag.restored") == 2
    everything = proc.stdout + proc.stderr + json.dumps(log)
    assert REDIS_PW not in everything


def test_successful_deploy_leaves_the_new_split(
    setup: tuple[Tm, Path, Path], ngx: NginxServer, hap: HaproxyServer, redis_server: RedisServer
) -> None:
    tm, plan, flags = setup
    proc = tm("run", str(plan))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = load(ngx.url, rps=300, duration=0.5)
    assert res.failed == 0 and res.by_body == {"canary": res.total}
    assert asyncio.run(router(hap.router_config(), "lb").get_weights()) == {
        "stable": 25,
        "canary": 75,
    }
    doc = json.loads(flags.read_text())["flags"]
    assert doc["banner"]["state"] == "DISABLED" and doc["banner"]["metadata"] == {"owner": "web"}
    assert doc["checkout-v2"]["targeting"]["fractional"][1:] == [["on", 10], ["off", 90]]
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert client.hget("cli:new-ui", "percentage") == "25"
    finally:
        client.delete("cli:new-ui")
        client.close()
    assert REDIS_PW not in proc.stdout + proc.stderr


def test_preflight_refuses_weights_that_do_not_sum_to_100(
    setup: tuple[Tm, Path, Path], ngx: NginxServer
) -> None:
    tm, plan, _flags = setup
    text = plan.read_text().replace("canary: 100", "canary: 90", 1)
    plan.write_text(text)
    before = ngx.include.read_text()
    proc = tm("run", str(plan))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "weights sum to 90, not 100" in proc.stderr
    assert ngx.include.read_text() == before
