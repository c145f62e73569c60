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
from tminus.steps.release import rollback_script, switch_script
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
          - {kind: run, command: "lb drain ${batch_hosts} --batch ${batch_index}"}
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


# --- gates: the first batch is a canary, max_fail_per_batch, a failed check switches back ----


def _boxes(tmp_path: Path, n: int, steps: list[dict[str, Any]], **phase: Any) -> Path:
    names = [f"box{i}" for i in range(1, n + 1)]
    plan = {
        "name": "gates",
        "targets": {"hosts": {h: {"local": True} for h in names}, "groups": {"boxes": names}},
        "phases": [{"name": "deploy", "steps": steps, **phase}],
    }
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(plan))
    return path


def _step_artifacts(tmp_path: Path, deploy: str, key: str = "phase/0/step/0") -> dict[str, Any]:
    rows = Store(f"sqlite:///{tmp_path}/.tminus/state.db").step_rows(deploy)
    return dict(rows[key]["artifacts"] or {})


def test_first_batch_is_a_canary_and_a_host_failing_its_check_is_switched_back(
    tmp_path: Path,
) -> None:
    """The issue's rollout: batch [1, 2], max_fail "50%", the first host fails its health
    check after the switch. The rollout stops after the canary batch (the other hosts never
    get the release) and the canary host is switched back to v1 and marked BAD_RELEASE under
    its inventory name.

    Mutations tried: `first_batch_canary` defaulting to False in `_Run.over_limit` → box2..4
    get v2, fails; `rollout(..., revert=None)` in release.py → box1 stays on v2, fails;
    `$(hostname)` back in rollback_script → the BAD_RELEASE line names the machine, fails."""
    tm = Tm(tmp_path)
    src = tmp_path / "build"
    src.mkdir()
    (src / "VERSION").write_text("v1\n")
    app = f"{tmp_path}/srv/${{host}}"
    rel: dict[str, Any] = {"kind": "release", "on": "boxes", "path": app, "source": str(src)}
    tm("run", str(_boxes(tmp_path, 4, [{**rel, "release_id": "v1"}])), check=0)
    (src / "VERSION").write_text("v2\n")
    check = {  # the per-host health check after the switch: box1 is broken
        "kind": "run",
        "name": "health",
        "command": f'touch {tmp_path}/checked-${{host}}; test "${{host}}" != box1',
    }
    step = {**rel, "release_id": "v2", "batch": [1, 2], "max_fail": "50%", "after_batch": [check]}
    plan = _boxes(tmp_path, 4, [step], on_failure="pause")
    proc = tm("run", str(plan), check=3)
    assert "canary" in proc.stderr + proc.stdout
    arts = _step_artifacts(tmp_path, "gates-2")
    hosts = arts["hosts"]
    assert hosts["box1"]["status"] == "failed"
    assert "health" in hosts["box1"]["error"] and "undone: switched back" in hosts["box1"]["error"]
    assert [hosts[h]["status"] for h in ("box2", "box3", "box4")] == ["skipped"] * 3
    assert arts["switched"] == [] and arts["switched_back"] == ["box1"]
    for h in ("box1", "box2", "box3", "box4"):
        root = tmp_path / "srv" / h
        assert (root / "current").readlink() == Path("releases/v1"), h
    assert not (tmp_path / "checked-box2").exists()
    assert not (tmp_path / "srv" / "box2" / "releases" / "v2").exists()
    bad = (tmp_path / "srv" / "box1" / "releases" / "v2" / "BAD_RELEASE").read_text()
    assert bad.startswith("rolled back by alice at ") and bad.rstrip().endswith("host box1)")


def test_max_fail_per_batch_stops_a_rollout_that_max_fail_would_let_go_on(
    tmp_path: Path,
) -> None:
    """6 hosts in batches of 2, max_fail "50%" (3 over the step), max_fail_per_batch "50%"
    (1 per batch), first_batch_canary: false. box1 fails in batch 1 (within both, and the
    canary rule is off: the rollout goes on); box3 and box4 fail in batch 2: 3 failures are
    within max_fail but 2 of a batch of 2 are over max_fail_per_batch, so batch 3 never runs.

    Mutations tried: not checking max_fail_per_batch in `_Run.over_limit` → box5/box6 run,
    fails; ignoring `first_batch_canary: false` → the step stops after batch 1, fails."""
    tm = Tm(tmp_path)
    step = {
        "kind": "ssh",
        "on": "boxes",
        "batch": 2,
        "max_fail": "50%",
        "max_fail_per_batch": "50%",
        "first_batch_canary": False,
        "command": f"touch {tmp_path}/ran-${{host}}; "
        'case "${host}" in box1|box3|box4) exit 3;; esac',
    }
    proc = tm("run", str(_boxes(tmp_path, 6, [step], on_failure="pause")), check=3)
    assert "max_fail_per_batch" in proc.stderr + proc.stdout
    arts = _step_artifacts(tmp_path, "gates-1")
    status = {h: r["status"] for h, r in arts["hosts"].items()}
    assert status == {
        "box1": "failed",
        "box2": "ok",
        "box3": "failed",
        "box4": "failed",
        "box5": "skipped",
        "box6": "skipped",
    }
    assert not (tmp_path / "ran-box5").exists()


def test_a_hook_can_run_on_the_batch_host(tmp_path: Path) -> None:
    """`on: ${host}` in an after_batch hook: an ssh check on each host of the batch, whose
    failure is that host's (it counts against max_fail). Before, the plan was refused
    ("not a valid name")."""
    tm = Tm(tmp_path)
    check = {
        "kind": "ssh",
        "name": "health on the host",
        "on": "${host}",
        "command": f'echo "$TMINUS_HOST" > {tmp_path}/checked-${{host}}; test "${{host}}" != box2',
    }
    step = {"kind": "ssh", "on": "boxes", "max_fail": 1, "command": "true", "after_batch": [check]}
    tm("check", str(_boxes(tmp_path, 3, [step])), check=0)
    tm("run", str(_boxes(tmp_path, 3, [step])), check=0)
    for h in ("box1", "box2", "box3"):
        assert (tmp_path / f"checked-{h}").read_text() == f"{h}\n"
    hosts = _step_artifacts(tmp_path, "gates-1")["hosts"]
    assert {h: r["status"] for h, r in hosts.items()} == {
        "box1": "ok",
        "box2": "failed",
        "box3": "ok",
    }
    assert "health on the host" in hosts["box2"]["error"]


def test_check_validates_gates_and_on_host() -> None:
    steps = """\
      - kind: ssh
        on: web
        command: "true"
        batch: [1, 2]
        max_fail_per_batch: "20%"
        first_batch_canary: false
        after_batch:
          - {kind: ssh, on: "${host}", command: "curl -fsS localhost/health"}
      - kind: release
        on: web
        path: /srv/app
        source: build/
        max_fail_per_batch: 0
        before_batch:
          - {kind: ssh, on: "${host}", command: "drain"}
"""
    assert _problems(steps) == []
    steps = """\
      - kind: ssh
        on: web
        command: "true"
        max_fail_per_batch: "120%"
      - kind: upload
        on: web
        src: a
        dest: /b
        max_fail_per_batch: -1
      - kind: ssh
        on: "${host}"
        command: "true"
"""
    found = {(code, line, msg) for code, _, line, msg in _problems(steps)}
    assert (
        "bad-max-fail",
        15,
        "max_fail_per_batch percentage must be at most 100%, got '120%'",
    ) in found
    assert ("bad-max-fail", 20, "max_fail_per_batch must be 0 or more, got -1") in found
    assert any(code == "host-outside-hook" and line == 22 for code, line, _ in found), found
    result = load_plan_text(
        PLAN_HEAD + '      - {kind: ssh, on: "${hosts}", command: "true"}\n', "p"
    )
    assert result.plan is None  # only ${host} itself is allowed
    assert [p.message for p in result.problems] == ["'${hosts}' is not a valid name"]


def test_order_lists_each_release_once(tmp_path: Path) -> None:
    """Mutation: the old `printf ID >> .tminus/order` → "a a" after a re-run, fails."""
    root = tmp_path / "app"
    _stage(root, "a")
    _switch(root, "a", keep=5)
    _switch(root, "a", keep=5)  # a re-run of the same release
    assert (root / ".tminus" / "order").read_text() == "a\n"
    _stage(root, "b")
    _switch(root, "b", keep=5)
    _switch(root, "a", keep=5)  # a switched in again goes to the end, once
    assert (root / ".tminus" / "order").read_text() == "b\na\n"


def test_bad_release_names_the_inventory_host(tmp_path: Path) -> None:
    """Mutation: `$(hostname)` instead of `$HOST` in rollback_script → fails."""
    root = tmp_path / "app"
    _stage(root, "a")
    _switch(root, "a", keep=5)
    proc = subprocess.run(
        ["sh", "-c", rollback_script(str(root), "a", "bob", "d-1", "web-07")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    bad = (root / "releases" / "a" / "BAD_RELEASE").read_text()
    assert bad.startswith("rolled back by bob at ") and bad.endswith("(deploy d-1, host web-07)\n")


def test_tolerated_host_failures_are_named_in_the_final_line_and_status(tmp_path: Path) -> None:
    """A fleet step whose max_fail tolerated a failed host succeeds, and the deploy says which
    host failed (it used to end with a plain "succeeded"): in the final line, in
    `tminus status` and in `--output json` (`failed_hosts`)."""
    tm = Tm(tmp_path)
    step = {
        "kind": "ssh",
        "name": "Deploy app",
        "on": "boxes",
        "batch": 4,
        "max_fail": 1,
        "command": 'case "${host}" in box3) exit 3;; esac',
    }
    proc = tm("run", str(_boxes(tmp_path, 4, [step])), check=0)
    assert "1 host failure(s) tolerated by max_fail: box3 (Deploy app)" in proc.stdout
    info = tm.json("status", "gates-1")
    assert info["state"] == "succeeded"
    assert [(f["host"], f["title"]) for f in info["failed_hosts"]] == [("box3", "Deploy app")]
    text = tm("status", "gates-1").stdout
    assert "host box3 FAILED in 'Deploy app' (tolerated by max_fail)" in text
