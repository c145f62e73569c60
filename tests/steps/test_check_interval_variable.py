"""A check's analysis ``interval`` written with a variable (``interval: ${every}``), as the
seed 003 plan does so that a rehearsal can shorten its 5-minute cadence with ``--var``:
`tminus check` judges it with the plan's values, and a canary's analysis measures on the
resolved interval (real nginx, real app processes, the real CLI)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm
from tminus.testing.app import AppProcess
from tminus.testing.nginx import NginxServer


@pytest.fixture
def nginx() -> Iterator[NginxServer]:
    with AppProcess("stable") as stable, AppProcess("canary") as canary:
        pools = {"stable": [stable.address], "canary": [canary.address]}
        with NginxServer(pools) as ngx:
            yield ngx


def plan(router: dict[str, Any], every: str, marks: Path) -> str:
    doc = {
        "tminus": 1,
        "name": "interval-var",
        "variables": {"every": every},
        "targets": {"routers": {"web": router}},
        "checks": {
            "measured": {
                "name": "Measurements",
                "source": "command",
                "command": f"echo x >> {marks} && echo 0",
                "interval": "${every}",
                "expect": "== 0",
            }
        },
        "phases": [
            {
                "name": "Roll out",
                "steps": [
                    {
                        "kind": "canary",
                        "router": "web",
                        "stable": "stable",
                        "canary": "canary",
                        "steps": [{"weight": 20, "pause": "3s"}],
                        "analysis": ["measured"],
                    }
                ],
            }
        ],
    }
    return json.dumps(doc, indent=1)  # JSON is YAML


def test_check_rejects_an_interval_variable_that_is_no_duration(tm: Tm) -> None:
    """Mutation: with the check-sites loop in `_deferred_durations` (validate.py) skipping
    every check, `tminus check` accepts `every: soon` (tried: exit 0, the test fails)."""
    router = {"kind": "nginx", "include_file": "inc.conf", "upstream": "b",
              "pools": {"stable": ["127.0.0.1:1"], "canary": ["127.0.0.1:2"]}}  # fmt: skip
    (tm.cwd / "plan.yaml").write_text(plan(router, "soon", tm.cwd / "marks"))
    bad = tm("check", "plan.yaml")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    out = bad.stdout + bad.stderr
    assert "bad-duration" in out and "interval" in out and "Traceback" not in out
    assert "plan.yaml:" in out  # file:line:column
    (tm.cwd / "plan.yaml").write_text(plan(router, "5m", tm.cwd / "marks"))
    tm("check", "plan.yaml", check=0)


def test_canary_analysis_measures_on_the_resolved_interval(tm: Tm, nginx: NginxServer) -> None:
    """A 3 s hold with `interval: ${every}` and `--var every=1s`: 3-4 measurements (the
    plan's own value, 5m, would give 1).

    Mutation: without `resolve_durations` in `canary.resolve_checks`, the analysis gets the
    unresolved duration: 1 measurement (tried: `assert 3 <= 1` fails)."""
    marks = tm.cwd / "marks"
    (tm.cwd / "plan.yaml").write_text(plan(nginx.router_config(), "5m", marks))
    run = tm("run", "plan.yaml", "--var", "every=1s")
    assert run.returncode == 0, run.stdout + run.stderr
    measured = len(marks.read_text().splitlines())
    assert 3 <= measured <= 4, measured
