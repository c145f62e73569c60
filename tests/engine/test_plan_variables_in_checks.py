"""Issue #12: ``${…}`` in a check's conditions and in durations, resolved at run time with the
deploy's resolver, checked by `tminus check` — through the real CLI.

Mutations tried:
- ``run_check`` does not hand the resolved conditions to ``judge`` (``m.conditions`` left
  unset): the condition stays unresolved, the check errors and the healthy deploy is rolled
  back (``test_condition_variables_are_resolved_at_run_time`` fails).
- ``WaitKind.execute`` without ``resolve_durations``: ``duration: ${d}`` waits 0 s and no
  bad value is reported (``test_wait_duration_from_a_variable`` fails).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from tests.conftest import Tm
from tminus.plan.interpolate import Resolver
from tminus.plan.loader import load_plan
from tminus.plan.steps import CanaryStep
from tminus.steps.registry import get_kind


def _plan(expect: str, *, extra_vars: str = "", wait: str = '"1s"') -> str:
    return f"""
name: cond
environment: test
variables:
  release: v42
  d: 1s{extra_vars}
secrets:
  token: ${{env:TM_TOKEN:-s3cret-token}}
phases:
  - name: p
    steps:
      - {{kind: wait, duration: {wait}}}
    verify:
      - name: version
        source: command
        command: "echo shop v42 s3cret-token"
        expect: '{expect}'
"""


def test_condition_variables_are_resolved_at_run_time(tm: Tm) -> None:
    (tm.cwd / "p.yaml").write_text(_plan('contains "${release}"'))
    proc = tm("run", "p.yaml", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the deploy's own value, not the plan's default: v43 is not what runs → rolled back
    proc = tm("run", "p.yaml", "--var", "release=v43", timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'expected contains "v43"' in proc.stdout


def test_condition_with_builtins_numbers_and_masked_secrets(tm: Tm) -> None:
    (tm.cwd / "p.yaml").write_text(_plan('contains "${plan_name}"').replace("shop", "cond"))
    assert tm("run", "p.yaml").returncode == 0
    # a number from a variable
    (tm.cwd / "p.yaml").write_text(
        _plan("> ${threshold}", extra_vars="\n  threshold: 41").replace(
            "echo shop v42 s3cret-token", "echo 42"
        )
    )
    assert tm("run", "p.yaml").returncode == 0
    proc = tm("run", "p.yaml", "--var", "threshold=43")
    assert proc.returncode == 1 and "42, expected > 43" in proc.stdout, proc.stdout
    # a secret in a condition is compared with its value, and masked in every message
    (tm.cwd / "p.yaml").write_text(
        _plan('contains "${token}"').replace("echo shop v42 s3cret-token", "echo shop v42")
    )
    proc = tm("run", "p.yaml")
    assert proc.returncode == 1, proc.stdout
    assert 'expected contains "***"' in proc.stdout
    assert "s3cret-token" not in proc.stdout + proc.stderr
    # a condition that is not one once resolved is an error, never a pass
    (tm.cwd / "p.yaml").write_text(
        _plan("> ${threshold}", extra_vars="\n  threshold: 41").replace(
            "echo shop v42 s3cret-token", "echo 42"
        )
    )
    proc = tm("run", "p.yaml", "--var", "threshold=v42")
    assert proc.returncode == 1
    assert "a condition does not resolve" in proc.stdout and "'v42' is not a number" in proc.stdout
    # ... and `tminus check` says so when the plan's own value makes it one
    bad = _plan("> ${release}")
    (tm.cwd / "p.yaml").write_text(bad)
    proc = tm("check", "p.yaml")
    assert proc.returncode == 2
    line = 1 + bad.splitlines().index("        expect: '> ${release}'")
    head = rf"p\.yaml:{line}:\d+: error\[bad-condition\]: "
    assert re.search(head + r"'> \$\{release\}' with the plan's values", proc.stderr), proc.stderr


def test_check_flags_an_unknown_variable_in_a_condition(tm: Tm) -> None:
    (tm.cwd / "p.yaml").write_text(_plan('contains "${relase}"'))
    proc = tm("check", "p.yaml")
    assert proc.returncode == 2
    line = 1 + _plan('contains "${relase}"').splitlines().index(
        "        expect: 'contains \"${relase}\"'"
    )
    assert re.search(
        rf"p\.yaml:{line}:\d+: error\[undefined-variable\]: undefined variable 'relase'",
        proc.stderr,
    ), proc.stderr
    assert "did you mean 'release'?" in proc.stderr


def test_wait_duration_from_a_variable(tm: Tm) -> None:
    (tm.cwd / "p.yaml").write_text(_plan('contains "v42"', wait='"${d}"'))
    assert tm("check", "p.yaml").returncode == 0
    start = time.monotonic()
    proc = tm("run", "p.yaml", "--var", "d=2s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - start >= 2.0
    assert "waited 2s" in proc.stdout
    # a bad value at run time: a clear error, nothing waited
    proc = tm("run", "p.yaml", "--var", "d=soon")
    assert proc.returncode == 1
    assert "duration '${d}' is 'soon', not a duration" in proc.stdout + proc.stderr
    # a bad default: `tminus check` says so, with the line
    bad = _plan('contains "v42"', wait='"${d}"').replace("d: 1s", "d: soon")
    (tm.cwd / "p.yaml").write_text(bad)
    proc = tm("check", "p.yaml")
    assert proc.returncode == 2
    line = 1 + bad.splitlines().index('      - {kind: wait, duration: "${d}"}')
    head = rf"p\.yaml:{line}:\d+: error\[bad-duration\]: "
    assert re.search(head + r"duration '\$\{d\}' is 'soon'", proc.stderr), proc.stderr


def _canary_plan(tmp: Path, pause: str, hold: str) -> dict[str, Any]:
    return {
        "tminus": 1,
        "name": "canary-vars",
        "variables": {"hold": hold},
        "targets": {
            "routers": {
                "web": {
                    "kind": "nginx",
                    "include_file": str(tmp / "split.conf"),
                    "config": str(tmp / "nginx.conf"),
                    "upstream": "app",
                    "pools": {"stable": ["127.0.0.1:1"], "canary": ["127.0.0.1:2"]},
                }
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
                        "steps": [{"weight": 10, "pause": pause}, {"weight": 50}],
                    }
                ],
            }
        ],
    }


def test_canary_pause_from_a_variable(tm: Tm) -> None:
    path = tm.cwd / "c.yaml"
    path.write_text(json.dumps(_canary_plan(tm.cwd, "${hold}", "90s"), indent=1))
    assert tm("check", "c.yaml").returncode == 0, tm("check", "c.yaml").stderr
    plan = load_plan(path).plan
    assert plan is not None
    step = plan.phases[0].steps[0]
    assert isinstance(step, CanaryStep)
    kind = get_kind("canary")
    for hold, shown in (("90s", "10% (hold 1m30s)"), ("2m", "10% (hold 2m)")):
        text = kind.describe(step, Resolver.for_plan({"hold": hold}, {}))
        assert shown in text, text
    path.write_text(json.dumps(_canary_plan(tm.cwd, "${hold}", "a while"), indent=1))
    proc = tm("check", "c.yaml")
    assert proc.returncode == 2 and "error[bad-duration]" in proc.stderr, proc.stderr
    assert "pause '${hold}' is 'a while', not a duration" in proc.stderr
