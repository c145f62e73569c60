"""Flag stores on real files and a real (private) redis-server: the share of user keys, the
stickiness as a percentage grows, exact restore, and what tminus refuses to touch."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tminus.flags.base import FlagState, FlagStore, FlagStoreError, open_flag_store
from tminus.flags.bucketing import HASH_VERSION, fractional_index, in_rollout
from tminus.plan.interpolate import Resolver
from tminus.plan.targets import FlagdStore, RedisFlagStore
from tminus.testing.redis import RedisServer

KEYS = [f"user-{i:05d}" for i in range(10_000)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer(password="s3cret-pw") as rs:
        yield rs


def flagd_store(path: Path) -> FlagStore:
    return open_flag_store("flags", FlagdStore(kind="flagd", path=str(path)), Resolver())


def redis_store(rs: RedisServer, prefix: str) -> FlagStore:
    resolver = Resolver.for_plan({}, {"redis_pw": rs.password or ""})
    cfg = RedisFlagStore(kind="redis", url=rs.url, prefix=prefix)
    return open_flag_store("live", cfg, resolver)


def flagd_on(path: Path, flag: str, key: str) -> bool:
    """Evaluate ``flag`` for ``key`` from the file as flagd does (the default bucketing
    expression, cat(flagKey, targetingKey), and the file's own weights)."""
    obj = json.loads(path.read_text())["flags"][flag]
    if obj["state"] != "ENABLED":
        return False
    expr, *buckets = obj["targeting"]["fractional"]
    assert expr == {"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}
    i = fractional_index(flag + key, [b[1] for b in buckets])
    return bool(obj["variants"][buckets[i][0]])


async def redis_on(store: FlagStore, flag: str, keys: list[str]) -> set[str]:
    """Evaluate like an application reading the hash: enabled and the key in the rollout."""
    state = await store.get(flag)
    assert state is not None and state.hash_version == HASH_VERSION
    if not state.enabled:
        return set()
    return {k for k in keys if in_rollout(flag, k, state.percentage)}


def within_binomial(count: int, n: int, p: float, sds: float = 4.5) -> bool:
    sd = (n * p * (1 - p)) ** 0.5
    return abs(count - n * p) <= sds * sd


def test_flagd_share_and_stickiness(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    store = flagd_store(path)
    previous: set[str] = set()
    for pct in (5, 25, 100):
        state = run(store.update("new-checkout", percentage=pct, enabled=True))
        assert state == FlagState(enabled=True, percentage=pct)
        on = {k for k in KEYS if flagd_on(path, "new-checkout", k)}
        assert within_binomial(len(on), len(KEYS), pct / 100), (pct, len(on))
        assert previous <= on, f"{len(previous - on)} keys left the rollout at {pct}%"
        previous = on
    assert previous == set(KEYS)
    obj = json.loads(path.read_text())["flags"]["new-checkout"]
    assert obj["targeting"]["fractional"][1:] == [["on", 100], ["off", 0]]
    assert obj["defaultVariant"] == "off" and obj["variants"] == {"on": True, "off": False}


def test_flagd_keeps_other_flags_and_refuses_foreign_targeting(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    others = {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "$evaluators": {"is_staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
        "flags": {
            "header-color": {
                "state": "ENABLED",
                "variants": {"red": "#f00", "blue": "#00f"},
                "defaultVariant": "red",
                "targeting": {"if": [{"$ref": "is_staff"}, "blue", None]},
            },
            "legacy": {  # like examples/seeds: its own bucketing expression, off-first order
                "state": "DISABLED",
                "variants": {"on": True, "off": False},
                "defaultVariant": "off",
                "targeting": {"fractional": [{"var": "user_id"}, ["off", 90], ["on", 10]]},
            },
        },
    }
    path.write_text(json.dumps(others))
    store = flagd_store(path)
    assert run(store.get("legacy")) == FlagState(enabled=False, percentage=10)
    run(store.update("legacy", percentage=2.5, enabled=True))
    run(store.update("brand-new", enabled=False))
    doc = json.loads(path.read_text())
    assert doc["$schema"] == others["$schema"] and doc["$evaluators"] == others["$evaluators"]
    assert doc["flags"]["header-color"] == others["flags"]["header-color"]
    assert doc["flags"]["legacy"]["targeting"] == {
        "fractional": [{"var": "user_id"}, ["off", 97500], ["on", 2500]]
    }
    assert run(store.get("legacy")) == FlagState(enabled=True, percentage=2.5)
    assert run(store.get("brand-new")) == FlagState(enabled=False, percentage=100)
    with pytest.raises(FlagStoreError, match="no 'on' and 'off' variants"):
        run(store.update("header-color", percentage=50))
    assert json.loads(path.read_text()) == doc, "a refused change must leave the file alone"


def test_flagd_snapshot_restore_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    store = flagd_store(path)
    run(store.update("a", percentage=30))
    before_a = run(store.snapshot("a"))
    before_b = run(store.snapshot("b"))
    assert before_b is None
    run(store.update("a", percentage=70, enabled=False))
    run(store.update("b", percentage=1))
    run(store.restore("a", before_a))
    run(store.restore("b", before_b))
    doc = json.loads(path.read_text())
    assert doc["flags"] == {"a": before_a}
    assert not list(tmp_path.glob(".flags.json.tminus-tmp")), "no temp file left behind"


def test_flagd_broken_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text('{"flags": {"a": ')
    with pytest.raises(FlagStoreError, match="not valid JSON"):
        run(flagd_store(path).update("a", percentage=5))
    assert path.read_text() == '{"flags": {"a": '


def test_redis_share_and_stickiness(redis_server: RedisServer) -> None:
    store = redis_store(redis_server, "t1:")
    previous: set[str] = set()
    for pct in (5, 25, 100):
        run(store.update("new-checkout", percentage=pct, enabled=True))
        on = run(redis_on(store, "new-checkout", KEYS))
        assert within_binomial(len(on), len(KEYS), pct / 100), (pct, len(on))
        assert previous <= on
        previous = on
    assert previous == set(KEYS)


def test_redis_fields_restore_and_hash_version(redis_server: RedisServer) -> None:
    import redis

    store = redis_store(redis_server, "t2:")
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert run(store.snapshot("f")) is None
        run(store.update("f", percentage=2.5))
        fields = client.hgetall("t2:f")
        assert fields["percentage"] == "2.5" and fields["enabled"] == "1"
        assert fields["hash_version"] == str(HASH_VERSION) and fields["updated_at"]
        snap = run(store.snapshot("f"))
        run(store.update("f", percentage=50, enabled=False))
        assert run(store.get("f")) == FlagState(enabled=False, percentage=50)
        run(store.restore("f", snap))
        assert client.hgetall("t2:f") == fields
        run(store.restore("f", None))
        assert not client.exists("t2:f")
        client.hset("t2:old", mapping={"percentage": "10", "enabled": "1", "hash_version": "0"})
        with pytest.raises(FlagStoreError, match="hash version 0"):
            run(store.update("old", percentage=20))
        assert client.hget("t2:old", "percentage") == "10"
    finally:
        client.close()


def test_redis_errors_never_show_the_password(redis_server: RedisServer) -> None:
    wrong = RedisFlagStore(kind="redis", url=f"redis://:not-the-pw@127.0.0.1:{redis_server.port}/0")
    store = open_flag_store("live", wrong, Resolver())
    with pytest.raises(FlagStoreError) as err:
        run(store.get("f"))
    assert "not-the-pw" not in str(err.value)
    assert "***@127.0.0.1" in str(err.value)
    assert "not-the-pw" not in store.describe()
