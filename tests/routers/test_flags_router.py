"""The ``flags`` router: a traffic split written as a flag percentage (flagd file)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tminus.flags.bucketing import in_rollout
from tminus.plan.interpolate import Resolver
from tminus.plan.targets import FlagdStore, FlagsRouter
from tminus.routers.base import RouterContext, RouterError, open_router


def test_weights_become_a_sticky_flag_percentage(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    ctx = RouterContext(
        name="rollout",
        resolver=Resolver(),
        state_dir=tmp_path,
        services={},
        flag_stores={"file": FlagdStore(kind="flagd", path=str(path))},
    )
    r = open_router(
        "rollout", ctx, FlagsRouter(kind="flags", store="file", flag="checkout", on_pool="green")
    )
    assert r.pools() == ["stable", "green"]
    assert asyncio.run(r.get_weights()) == {"stable": 100, "green": 0}
    keys = [f"k{i}" for i in range(4000)]
    seen: set[str] = set()
    for pct in (5, 25, 100):
        asyncio.run(r.set_weights({"stable": 100 - pct, "green": pct}))
        assert asyncio.run(r.get_weights()) == {"stable": 100 - pct, "green": pct}
        on = {k for k in keys if in_rollout("checkout", k, pct)}
        assert seen <= on
        seen = on
    flag = json.loads(path.read_text())["flags"]["checkout"]
    assert flag["state"] == "ENABLED" and flag["targeting"]["fractional"][1] == ["on", 100]
    with pytest.raises(RouterError, match="no cookie route"):
        asyncio.run(r.set_cookie_route("green"))
    with pytest.raises(RouterError, match="unknown pool"):
        asyncio.run(r.set_weights({"canary": 100}))
    assert asyncio.run(r.verify()) == []
