"""Fleet steps without SSH: batch and max_fail arithmetic, `tminus check` rules, the release
scripts' keep/prune rules, and releases on a local host through the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm
from tminus.plan.loader import load_plan_text
from tminus.plan.steps import batch_sizes, tolerated_failures
from tminus.steps._fleet import natural_key
from tminus.steps.release import switch_script
from tminus.store.store import Store

# --- batches ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "total", "sizes"),
    [
        (None, 10, [10]),
        (1, 3, [1, 1, 1]),
        (3, 10, [3, 3, 3, 1]),
        ("4", 10, [4, 4, 2]),
        (20, 5, [5]),
        ("25%", 10, [2, 2, 2, 2, 2]),  # 2.5 rounds down, as Ansible's serial
        ("50%", 5, [2, 2, 1]),
        ("1%", 10, [1] * 10),  # never below one host
        ("100%", 7, [7]),
        ("12.5%", 16, [2] * 8),
        ([1, 5, "25%"], 20, [1, 5, 5, 5, 4]),  # the last size repeats
        ([1, 3], 10, [1, 3, 3, 3]),
        ([2, "50%"], 3, [2, 1]),
        ([5, 1], 4, [4]),  # sizes never reached do not matter
        (3, 0, []),
        ([1], 1, [1]),
    ],
)
def test_batch_sizes(spec: Any, total: int, sizes: list[int]) -> None:
    assert batch_sizes(spec, total) == sizes
    assert sum(sizes) == total


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (0, "at least 1"),
        (-2, "at least 1"),
        ("0%", "above 0%"),
        ("150%", "at most 100%"),
        ("abc", "not a count"),
        ("5 %x", "not a count"),
        ([], "at least one size"),
        ([1, "x"], "not a count"),
        ([1, 0], "at least 1"),  # checked even where the ramp is never reached
        (True, "not a number"),
    ],
)
def test_bad_batches(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        batch_sizes(spec, 4)


@pytest.mark.parametrize(
    ("spec", "total", "tolerated"),
    [
        (0, 10, 0),
        (2, 10, 2),
        ("3", 10, 3),
        ("10%", 10, 1),
        ("10%", 9, 0),  # more than 10% of 9 is any failure
        ("25%", 10, 2),
        ("0%", 10, 0),
        ("100%", 4, 4),
        ("33.4%", 3, 1),
    ],
)
def test_tolerated_failures(spec: Any, total: int, tolerated: int) -> None:
    assert tolerated_failures(spec, total) == tolerated


@pytest.mark.parametrize("spec", [-1, "101%", "lots", False])
def test_bad_max_fail(spec: Any) -> None:
    with pytest.raises(ValueError):
        tolerated_failures(spec, 10)


def test_natural_host_order() -> None:
    names = ["h10", "h2", "h1", "web-a", "h03", "db1"]
    assert sorted(names, key=natural_key) == ["db1", "h1", "h2", "h03", "h10", "web-a"]


# --- tminus check ---------------------------------------------------------------------------

PLAN_HEAD = """\
name: fleet
targets:
  hosts:
    web1: {address: 10.0.0.1}
    web2: {address: 10.0.0.2}
  groups:
    web: [web1, web2]
phases:
  - name: one
    on_failure: pause
    steps:
"""


def _problems(steps: str) -> list[tuple[str, str, int, str]]:
    result = load_plan_text(PLAN_HEAD + steps, "plan.yaml")
    assert result.plan is not None, [p.format() for p in result.problems]
    return [(p.code, p.severity, p.line or 0, p.message) for p in result.problems]


def test_check_accepts_host_and_batch_variables() -> None:
    steps = """\
      - kind: ssh
        on: web
        command: echo ${host} ${host_address}
        batch: [1, "50%"]
        max_fail: "10%"
        before_batch:
          - {kind: run, command: "lb drain ${batch_hosts} # ${batch_index}"}
        after_batch:
          - {kind: http, url: "http://${host_address}:8080/health"}
      - kind: release
        on: web
        path: /srv/${host}/app
        source: build/
        release_id: "1.0-${deploy_id}"
        shared: [config/app.env, storage/]
"""
    assert _problems(steps) == []


def test_check_reports_fleet_mistakes_with_positions() -> None:
    steps = """\
      - kind: ssh
        on: web
        command: echo ${batch_hosts}
        batch: [1, "0%"]
        max_fail: "150%"
      - kind: release
        on: web
        path: srv/app
        source: build/
        release_id: "bad id"
        shared: [../etc]
      - kind: ssh
        on: webb
        command: "true"
"""
    found = {(code, line) for code, _, line, _ in _problems(steps)}
    assert ("undefined-variable", 14) in found  # ${batch_hosts} only exists in hooks
    assert ("bad-batch", 15) in found
    assert ("bad-max-fail", 16) in found
    assert ("relative-release-path", 19) in found
    assert ("bad-release-id", 21) in found
    assert ("bad-shared-path", 22) in found
    assert ("undefined-host-or-group", 24) in found


def test_check_rejects_an_approval_inside_a_hook() -> None:
    steps = """\
      - kind: ssh
        on: web
        command: "true"
        before_batch:
          - {kind: approve, roles: [ops]}
"""
    text = PLAN_HEAD.replace("phases:", "roles: {ops: {}}\nphases:") + steps
    result = load_plan_text(text, "plan.yaml")
    assert [p.code for p in result.problems if p.severity == "error"] == ["hook-waits"]


# --- keep: pruning never removes the live release nor the previous one -----------------------


def _stage(root: Path, rid: str) -> None:
    (root / "releases" / rid).mkdir(parents=True)
    (root / ".tminus").mkdir(exist_ok=True)


def _switch(root: Path, rid: str, keep: int) -> str:
    proc = subprocess.run(
        ["sh", "-c", switch_script(str(root), rid, keep)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _releases(root: Path) -> set[str]:
    return {p.name for p in (root / "releases").iterdir()}


def test_keep_prunes_by_go_live_order_and_spares_current_and_previous(tmp_path: Path) -> None:
    root = tmp_path / "app"
    for rid in ("b", "a"):  # "a" goes live after "b": order is by switch, not by name
        _stage(root, rid)
        _switch(root, rid, keep=1)
    assert _releases(root) == {"a", "b"}  # b is what a rollback of a goes back to
    assert (root / ".tminus" / "a.previous").read_text() == "releases/b\n"
    _stage(root, "c")
    out = _switch(root, "c", keep=1)
    assert "tminus-pruned b" in out
    assert _releases(root) == {"a", "c"}
    assert (root / "current").readlink() == Path("releases/c")
    # An old release switched in again by hand is the newest: pruning keeps it.
    _stage(root, "d")
    _switch(root, "d", keep=3)
    assert _releases(root) == {"a", "c", "d"}
    _switch(root, "a", keep=1)
    assert (root / "current").readlink() == Path("releases/a")
    assert _releases(root) == {"a", "d"}  # d: previous of a; c pruned
    # Releases tminus never switched (unknown order) are the oldest.
    (root / "releases" / "manual").mkdir()
    _stage(root, "e")
    _switch(root, "e", keep=3)
    assert _releases(root) == {"a", "d", "e"}


def test_keep_never_removes_the_live_release_even_with_keep_1(tmp_path: Path) -> None:
    root = tmp_path / "app"
    for rid in ("r1", "r2", "r3"):
        _stage(root, rid)
        _switch(root, rid, keep=1)
        live = (root / "current").readlink().name
        assert live == rid and live in _releases(root)
    assert _releases(root) == {"r2", "r3"}


# --- releases on a local host through the CLI ----------------------------------------------


def _plan(tmp_path: Path, steps: list[dict[str, Any]], **phase: Any) -> Path:
    plan = {
        "name": "local-release",
        "targets": {"hosts": {"box": {"local": True}}},
        "phases": [{"name": "deploy", "steps": steps, **phase}],
    }
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(plan))
    return path


def _release(src: Path, app: Path, rid: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "release",
        "id": "rel",
        "on": "box",
        "path": str(app),
        "source": str(src),
        "release_id": rid,
        "shared": ["config/app.env", "storage/"],
        "keep": 3,
        **extra,
    }


def test_local_host_release_switch_and_rollback(tmp_path: Path) -> None:
    tm = Tm(tmp_path)
    src, app = tmp_path / "build", tmp_path / "srv" / "app"
    (src / "config").mkdir(parents=True)
    (src / "bin").mkdir()
    (src / "bin" / "app").write_text("#!/bin/sh\necho v1\n")
    (src / "bin" / "app").chmod(0o755)
    (src / "config" / "app.env").write_text("SECRET=seeded\n")
    (src / "link").symlink_to("bin/app")
    tm("run", str(_plan(tmp_path, [_release(src, app, "v1")])), check=0)
    v1 = app / "releases" / "v1"
    assert (app / "current").readlink() == Path("releases/v1")
    assert (v1 / "bin" / "app").read_text().endswith("v1\n")
    assert (v1 / "bin" / "app").stat().st_mode & 0o777 == 0o755
    assert (v1 / "link").readlink() == Path("bin/app")
    # shared: the release's copy seeded shared/, then is linked; the directory is created
    assert (app / "shared" / "config" / "app.env").read_text() == "SECRET=seeded\n"
    assert (v1 / "config" / "app.env").readlink() == app / "shared" / "config" / "app.env"
    assert (v1 / "storage").readlink() == app / "shared" / "storage"
    assert (app / "shared" / "storage").is_dir()

    # v2 goes live, then a later step fails: the rollback switches back and marks v2 bad.
    (src / "bin" / "app").write_text("#!/bin/sh\necho v2\n")
    fail = {"kind": "run", "name": "smoke test", "command": "exit 1"}
    proc = tm("run", str(_plan(tmp_path, [_release(src, app, "v2"), fail])), check=1)
    assert "rolled_back" in proc.stderr
    assert (app / "current").readlink() == Path("releases/v1")
    bad = (app / "releases" / "v2" / "BAD_RELEASE").read_text()
    assert bad.startswith("rolled back by alice at 20") and "deploy local-release-2" in bad
    assert (app / "shared" / "config" / "app.env").read_text() == "SECRET=seeded\n"
    # The same id is refused afterwards: it was rolled back on this host.
    proc = tm("run", str(_plan(tmp_path, [_release(src, app, "v2")])), check=1)
    assert "BAD_RELEASE" in proc.stderr + proc.stdout
    assert (app / "current").readlink() == Path("releases/v1")


def test_local_first_release_rolled_back_removes_current(tmp_path: Path) -> None:
    tm = Tm(tmp_path)
    src, app = tmp_path / "build", tmp_path / "app"
    (src / "config").mkdir(parents=True)
    (src / "config" / "app.env").write_text("X=1\n")
    step = _release(src, app, "first", retries=1, timeout="30s")
    tm("run", str(_plan(tmp_path, [step, {"kind": "run", "command": "exit 3"}])), check=1)
    assert not (app / "current").exists() and not (app / "current").is_symlink()
    assert (app / "releases" / "first" / "BAD_RELEASE").exists()
    rows = Store(f"sqlite:///{tmp_path}/.tminus/state.db").step_rows("local-release-1")
    undo = next(r for k, r in rows.items() if k.startswith("rollback/"))
    assert undo["state"] == "succeeded"
    assert undo["artifacts"]["hosts"]["box"]["rollback"] == "removed-current"


def test_release_rollback_after_the_runner_was_killed(tmp_path: Path) -> None:
    """The undo is armed before the step runs and reads what each host recorded before its
    switch: after a kill -9 mid-rollout, `resume --rollback` switches back exactly the hosts
    that switched."""
    tm = Tm(tmp_path)
    names = ["box1", "box2", "box3", "box4"]
    src = tmp_path / "build"
    src.mkdir()
    (src / "VERSION").write_text("v1\n")
    app = f"{tmp_path}/srv/${{host}}"
    plan = {
        "name": "crash",
        "targets": {"hosts": {n: {"local": True} for n in names}, "groups": {"boxes": names}},
        "phases": [
            {
                "name": "deploy",
                "steps": [
                    {
                        "kind": "release",
                        "on": "boxes",
                        "path": app,
                        "source": str(src),
                        "release_id": "v1",
                    },
                ],
            }
        ],
    }
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(plan))
    tm("run", str(path), check=0)
    (src / "VERSION").write_text("v2\n")
    step = plan["phases"][0]["steps"][0]  # type: ignore[index]
    step.update(
        release_id="v2",
        batch=1,
        after_batch=[  # the runner dies after batch 2
            {"kind": "run", "command": 'if [ "${batch_index}" = 2 ]; then kill -9 $PPID; fi'}
        ],
    )
    path.write_text(json.dumps(plan))
    proc = tm("run", str(path))
    assert proc.returncode == -9 or proc.returncode == 137, (proc.returncode, proc.stderr)
    live = {n: (tmp_path / "srv" / n / "current").readlink().name for n in names}
    assert live == {"box1": "v2", "box2": "v2", "box3": "v1", "box4": "v1"}
    assert tm.latest()["state"] == "crashed"  # nobody recorded the end; the runner is gone

    proc = tm("resume", "crash-2", "--rollback", check=1)
    assert "rolled_back" in proc.stderr
    for n in names:
        root = tmp_path / "srv" / n
        assert (root / "current").readlink() == Path("releases/v1"), n
        assert (root / "releases" / "v2" / "BAD_RELEASE").exists() == (n in ("box1", "box2"))
