"""``kind: blue_green`` end to end through the real CLI: real nginx and HAProxy in front of two
real app versions (blue serving, green idle), under a constant user load.

- deploy to green, preview it, switch all traffic to green in one router call; a later step
  fails, and the rollback switches back to blue in one call: zero failed user requests, and
  the traffic moves blue → green → blue at the recorded times;
- a failing preview never switches: no user request reaches green.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.conftest import Tm
from tminus.store.store import Store
from tminus.testing.app import AppProcess
from tminus.testing.haproxy import HaproxyServer
from tminus.testing.load import LoadResult, constant_rate
from tminus.testing.nginx import NginxServer

RPS = 300


class Front(Protocol):
    @property
    def url(self) -> str: ...

    def router_config(self, **extra: Any) -> dict[str, Any]: ...


@pytest.fixture(scope="module")
def apps() -> Iterator[tuple[AppProcess, AppProcess]]:
    with AppProcess("blue") as blue, AppProcess("green") as green:
        yield blue, green


@pytest.fixture(params=["nginx", "haproxy"])
def front(request: pytest.FixtureRequest, apps: tuple[AppProcess, AppProcess]) -> Iterator[Front]:
    blue, green = apps
    blue.set(error_rate=0.0)
    green.set(error_rate=0.0)
    pools = {"blue": [blue.address], "green": [green.address]}
    with ExitStack() as stack:
        if request.param == "nginx":
            yield stack.enter_context(NginxServer(pools))
        else:
            yield stack.enter_context(HaproxyServer(pools))


def plan(front: Front, green: AppProcess, marker: Path) -> str:
    doc = {
        "tminus": 1,
        "name": "bg-test",
        "variables": {"fail_after_switch": "no"},
        "targets": {"routers": {"lb": front.router_config()}},
        "phases": [
            {
                "name": "Switch to green",
                "steps": [
                    {
                        "kind": "blue_green",
                        "id": "switch",
                        "router": "lb",
                        "active": "blue",
                        "idle": "green",
                        "rollback_window": "4h",
                        "deploy": [
                            {
                                "kind": "run",
                                "name": "Deploy the new version to green",
                                "command": f"echo deployed > {marker}",
                            }
                        ],
                        "preview": [
                            {
                                "name": "Green answers",
                                "source": "http",
                                "url": f"{green.url}/",
                                "status": 200,
                                "body_contains": "green",
                            }
                        ],
                    },
                    {"kind": "wait", "name": "Green serves a while", "duration": "1500ms"},
                    {
                        "kind": "run",
                        "name": "Post-switch smoke test",
                        "command": 'test "${fail_after_switch}" = no',
                    },
                ],
            }
        ],
    }
    return json.dumps(doc, indent=1)


async def run_under_load(tm: Tm, url: str, *args: str) -> tuple[int, str, LoadResult]:
    stop = asyncio.Event()
    load = asyncio.create_task(constant_rate(url, rps=RPS, duration=120, stop=stop))
    await asyncio.sleep(1.0)
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
    await asyncio.sleep(1.0)
    stop.set()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), await load


def store(tm: Tm) -> Store:
    return Store(f"sqlite:///{tm.cwd / '.tminus' / 'state.db'}")


def test_switch_and_switch_back_under_load_lose_no_request(
    tm: Tm, front: Front, apps: tuple[AppProcess, AppProcess]
) -> None:
    _, green = apps
    marker = tm.cwd / "green-deployed"
    (tm.cwd / "plan.yaml").write_text(plan(front, green, marker))
    code, out, load = asyncio.run(
        run_under_load(tm, front.url, "run", "plan.yaml", "--var", "fail_after_switch=yes")
    )
    assert code == 1, out
    st = store(tm)
    assert st.deploy("bg-test-1")["state"] == "rolled_back"
    assert marker.read_text().strip() == "deployed"
    art = st.step_rows("bg-test-1")["phase/0/step/0"]["artifacts"]
    switched = art["switched_at"]
    assert art["weights"] == {"blue": 0, "green": 100}
    assert art["rollback_until"] == pytest.approx(switched + 4 * 3600)
    evs = st.events("bg-test-1")
    # the switch back puts the router back as recorded before the step: all on blue
    back = [e for e in evs if e["type"] == "traffic.restored"]
    assert len(back) == 1 and back[0]["data"]["weights"] == {"blue": 100, "green": 0}
    # the switch back: the router call started (traffic.restoring) and returned (.restored)
    began = next(e for e in evs if e["type"] == "traffic.restoring")["ts"].timestamp()
    switched_back = back[0]["ts"].timestamp()

    # Not one user request failed, through the switch and the switch back.
    assert load.total > RPS * 3
    assert load.failed == 0, load.failures()[:5]
    # Before the switch every request went to blue; between the two, to green; then blue.
    margin = 0.25
    began_switch = switched - art["switch_ms"] / 1000  # when the router call started
    before = {r.body.strip() for r in load.requests if r.started < began_switch}
    during = {r.body.strip() for r in load.requests if switched + margin < r.started < began}
    after = {r.body.strip() for r in load.requests if r.started > switched_back + margin}
    assert (before, during, after) == ({"blue"}, {"green"}, {"blue"})


@pytest.mark.parametrize("front", ["haproxy"], indirect=True)
def test_failed_preview_never_switches(
    tm: Tm, front: Front, apps: tuple[AppProcess, AppProcess]
) -> None:
    _, green = apps
    green.set(error_rate=1.0)  # the new version is broken
    (tm.cwd / "plan.yaml").write_text(plan(front, green, tm.cwd / "green-deployed"))
    code, out, load = asyncio.run(run_under_load(tm, front.url, "run", "plan.yaml"))
    assert code == 1, out
    st = store(tm)
    row = st.step_rows("bg-test-1")["phase/0/step/0"]
    assert row["state"] == "failed" and "not switched" in (row["error"] or "")
    assert load.failed == 0
    assert set(load.by_body) == {"blue"}  # no user request ever reached green
