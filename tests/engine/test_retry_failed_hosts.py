"""`tminus resume DEPLOY --retry-failed-hosts`: hosts a fleet step's `max_fail` tolerated as
failed are finished later within the same deploy, on real OpenSSH sshd hosts
(:mod:`tminus.testing.sshd`), driven through the CLI.

Mutations tried (each made a test here fail, then was restored):
- the retry's artifacts not merged (the step keeps its old per-host records): the host that
  now succeeds is still listed in ``failed_hosts`` (test_a_host_fixed_since_is_finished...);
- hosts a later step skipped because they failed earlier not retried: ``b-h2`` is never
  written (same test);
- the exit code ignoring hosts that failed again (``code = exit_code_for(final)``): the retry
  that fails again exits 0 (test_a_host_that_fails_again...);
- the rollback-window guard and the later-deploy guard removed from ``retry_failed_hosts``:
  the retry runs instead of being refused (test_guards...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm
from tminus.store.store import Store
from tminus.testing.sshd import SshdFleet, SshdUnavailable

NAMES = ["h1", "h2", "h3"]


@pytest.fixture(scope="module")
def fleet() -> Any:
    try:
        f = SshdFleet(len(NAMES)).start()
    except SshdUnavailable as exc:  # fail, never skip: these tests need real SSH
        pytest.fail(f"cannot start sshd: {exc}")
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
def work() -> Any:
    """A directory the hosts' login user can write to (pytest's tmp_path is root-only)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="tminus-retry-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def targets(fleet: SshdFleet) -> dict[str, Any]:
    hosts = {
        i.name: {
            "address": "127.0.0.1",
            "port": i.port,
            "user": fleet.user,
            "identity_file": str(fleet.identity_file),
            "known_hosts": str(fleet.known_hosts),
        }
        for i in fleet.instances
    }
    return {"hosts": hosts, "groups": {"web": NAMES}}


def fleet_plan(work: Path, tg: dict[str, Any], name: str = "retry") -> str:
    """Step a fails on a host while ``block-HOST`` exists (max_fail 1 tolerates it); step b
    then skips that host (it failed earlier). A before_batch hook records each batch's hosts;
    the phase's verify records that it ran."""
    a = {
        "kind": "ssh",
        "id": "a",
        "on": "web",
        "max_fail": 1,
        "command": f"test ! -e {work}/block-${{host}} || {{ echo blocked >&2; exit 7; }}; "
        f"echo a >> {work}/a-${{host}}",
        "before_batch": [
            {"kind": "run", "command": f"echo ${{batch_hosts}} >> {work}/batches-a"},
        ],
    }
    b = {"kind": "ssh", "id": "b", "on": "web", "command": f"echo b >> {work}/b-${{host}}"}
    verify = [
        {
            "name": "verified",
            "source": "command",
            "command": f"echo v >> {work}/verified",
        }
    ]
    path = work / f"{name}.yaml"
    path.write_text(
        json.dumps(
            {
                "name": name,
                "targets": tg,
                "phases": [{"name": "roll", "steps": [a, b], "verify": verify}],
            }
        )
    )
    return str(path)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_host_fixed_since_is_finished_within_the_same_deploy(
    fleet: SshdFleet, work: Path
) -> None:
    tm = Tm(work)
    (work / "block-h2").write_text("")
    plan = fleet_plan(work, targets(fleet))
    first = tm("run", plan, check=0)
    assert "1 host failure(s) tolerated by max_fail: h2" in first.stderr + first.stdout
    store = Store(f"sqlite:///{work}/.tminus/state.db")
    before = tm.json("status", "retry-1")
    assert [(f["host"], f["step"]) for f in before["failed_hosts"]] == [("h2", "phase/0/step/0")]
    assert before["fleet"]["hosts"]["h2"] == {
        "phase/0/step/0": "failed",
        "phase/0/step/1": "skipped",
    }
    ended = store.deploy("retry-1")["finished_at"]

    (work / "block-h2").unlink()  # the condition that failed h2 is gone
    out = tm("resume", "retry-1", "--retry-failed-hosts", check=0)
    assert "1 host(s) now ok (h2)" in out.stdout, out.stdout
    assert "tolerated" not in out.stdout

    # h2 ran both steps now; h1 and h3 were not touched again
    assert lines(work / "a-h2") == ["a"] and lines(work / "b-h2") == ["b"]
    for h in ("h1", "h3"):
        assert lines(work / f"a-{h}") == ["a"] and lines(work / f"b-{h}") == ["b"]
    # the hook ran as in a normal run, for the retry's batch (h2 alone)
    assert lines(work / "batches-a") == ["h1 h2 h3", "h2"]
    # the phase's verify ran again after the retry
    assert lines(work / "verified") == ["v", "v"]

    after = tm.json("status", "retry-1")
    assert after["state"] == "succeeded" and after["failed_hosts"] == []
    assert after["fleet"]["hosts"]["h2"] == {"phase/0/step/0": "ok", "phase/0/step/1": "ok"}
    assert store.deploy("retry-1")["finished_at"] == ended  # its end (rollback window) kept
    assert store.lock("retry", "production") is None  # released again
    rows = store.step_rows("retry-1")
    assert rows["phase/0/step/0"]["state"] == "succeeded"
    assert rows["phase/0/step/0"]["artifacts"]["failed"] == 0
    types = [e["type"] for e in store.events("retry-1")]
    assert types.index("hosts.retry_started") < types.index("hosts.retry_finished")
    final = [e for e in store.events("retry-1") if e["type"] == "hosts.retry_finished"][-1]
    assert final["data"]["now_ok"] == {"phase/0/step/0": ["h2"], "phase/0/step/1": ["h2"]}
    # nothing is left to retry
    again = tm("resume", "retry-1", "--retry-failed-hosts", check=2)
    assert "no failed hosts to retry" in again.stderr


def test_a_host_that_fails_again_stays_listed_and_the_command_fails(
    fleet: SshdFleet, work: Path
) -> None:
    tm = Tm(work)
    (work / "block-h3").write_text("")
    plan = fleet_plan(work, targets(fleet))
    tm("run", plan, check=0)
    out = tm("resume", "retry-1", "--retry-failed-hosts", check=1)
    assert "1 still failed: h3 in phase/0/step/0: blocked" in out.stderr, out.stderr
    status = tm.json("status", "retry-1")
    assert status["state"] == "succeeded"
    assert [(f["host"], f["error"]) for f in status["failed_hosts"]] == [("h3", "blocked")]
    assert status["fleet"]["hosts"]["h3"] == {
        "phase/0/step/0": "failed",
        "phase/0/step/1": "skipped",
    }
    assert not (work / "b-h3").exists()  # still out of the rollout
    assert lines(work / "a-h1") == ["a"]  # the others were not run again
    assert lines(work / "batches-a") == ["h1 h2 h3", "h3"]
    text = tm("status", "retry-1", check=0).stdout
    assert "host h3 FAILED" in text


def local_plan(work: Path, **extra: Any) -> str:
    """Two local hosts; ``b`` fails while ``block-b`` exists (tolerated)."""
    tg = {"hosts": {"a": {"local": True}, "b": {"local": True}}, "groups": {"two": ["a", "b"]}}
    step = {
        "kind": "ssh",
        "on": "two",
        "max_fail": 1,
        "command": f"test ! -e {work}/block-${{host}} && echo x >> {work}/ran-${{host}}",
    }
    path = work / "loc.yaml"
    path.write_text(
        json.dumps(
            {"name": "loc", "targets": tg, "phases": [{"name": "p", "steps": [step]}]} | extra
        )
    )
    return str(path)


def test_guards_window_later_deploy_and_bad_input(tmp_path: Path) -> None:
    """Local hosts (the guards do not depend on SSH)."""
    tm = Tm(tmp_path)
    (tmp_path / "block-b").write_text("")
    plan = local_plan(tmp_path, rollback_window="1h")
    tm("run", plan, check=0)
    assert tm("resume", "loc-1", "--force", check=2).returncode == 2  # --force alone
    # after the rollback window: refused, unless --force
    late = {"TMINUS_CLOCK_OFFSET": str(2 * 3600)}
    out = tm("resume", "loc-1", "--retry-failed-hosts", env=late, check=2)
    assert "rollback window (1h) closed" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "ran-b").exists()
    # a later deploy of the same plan and environment succeeded: refused, unless --force
    (tmp_path / "block-b").unlink()
    tm("run", plan, check=0)
    out = tm("resume", "loc-1", "--retry-failed-hosts", check=2)
    assert "a later deploy of loc in production succeeded: loc-2" in out.stderr
    assert (tmp_path / "ran-b").read_text() == "x\n"  # only loc-2 ran on b
    out = tm("resume", "loc-1", "--retry-failed-hosts", "--force", env=late, check=0)
    assert "override recorded" in out.stderr
    assert (tmp_path / "ran-b").read_text() == "x\nx\n"
    started = [
        e
        for e in Store(f"sqlite:///{tmp_path}/.tminus/state.db").events("loc-1")
        if e["type"] == "hosts.retry_started"
    ]
    forced = started[0]["data"]["forced"]
    assert len(forced) == 2 and "loc-2" in forced[1]
    # a failed deploy, or one with no failed hosts, has nothing to retry
    out = tm("resume", "loc-2", "--retry-failed-hosts", check=2)
    assert "no failed hosts to retry" in out.stderr


def test_a_retry_whose_runner_died_is_finished_by_resume(tmp_path: Path) -> None:
    """The runner is killed (SIGKILL, :mod:`tminus.faults`) after the retried step's work on
    host b is done and before its result is merged: the deploy shows *crashed*; a plain
    `tminus resume` finishes the retry from the recorded host results (b is not run a third
    time) and puts the deploy back to *succeeded* with its end time unchanged.

    Mutation tried: `resume` not finishing an unfinished retry (the `pending_retry` branch
    removed): the plain resume walks the program, finds every node done and ends the deploy
    *succeeded* with b still listed as failed (and a new end time); this test fails."""
    tm = Tm(tmp_path)
    (tmp_path / "block-b").write_text("")
    plan = local_plan(tmp_path)
    tm("run", plan, check=0)
    store = Store(f"sqlite:///{tmp_path}/.tminus/state.db")
    ended = store.deploy("loc-1")["finished_at"]
    (tmp_path / "block-b").unlink()
    crash = {"TMINUS_CRASH_AFTER_EFFECTS": "1"}
    died = tm("resume", "loc-1", "--retry-failed-hosts", env=crash)
    assert died.returncode == -9, (died.returncode, died.stderr)
    assert (tmp_path / "ran-b").read_text() == "x\n"
    assert tm.json("status", "loc-1")["state"] == "crashed"
    out = tm("resume", "loc-1", check=0)
    assert "finishing the retry of failed hosts" in out.stderr
    assert (tmp_path / "ran-b").read_text() == "x\n"  # done once, not again
    assert (tmp_path / "ran-a").read_text() == "x\n"
    status = tm.json("status", "loc-1")
    assert status["state"] == "succeeded" and status["failed_hosts"] == []
    assert store.deploy("loc-1")["finished_at"] == ended


def test_an_abort_stops_the_retry_not_the_deploy(tmp_path: Path) -> None:
    """`tminus abort` during a retry stops the step's work on the host (its `sleep 60` is
    killed), the retry ends (exit 1, saying so), the host stays failed, and the deploy is
    back to *succeeded* with its lock released and no abort pending.

    Mutation tried: `_finish` not clearing the abort request: the deploy keeps it (a later
    retry would stop before its first step); this test fails on `abort_requested`."""
    import subprocess
    import sys
    import time

    tm = Tm(tmp_path)
    (tmp_path / "block-b").write_text("")
    path = tmp_path / "loc.yaml"
    tg = {"hosts": {"a": {"local": True}, "b": {"local": True}}, "groups": {"two": ["a", "b"]}}
    step = {
        "kind": "ssh",
        "on": "two",
        "max_fail": 1,
        "command": f"test ! -e {tmp_path}/block-${{host}} || exit 1; "
        f"if [ -e {tmp_path}/slow ]; then sleep 60; fi; echo x >> {tmp_path}/ran-${{host}}",
    }
    path.write_text(
        json.dumps({"name": "loc", "targets": tg, "phases": [{"name": "p", "steps": [step]}]})
    )
    tm("run", str(path), check=0)
    (tmp_path / "block-b").unlink()
    (tmp_path / "slow").write_text("")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tminus", "resume", "loc-1", "--retry-failed-hosts"],
        cwd=tmp_path,
        env=tm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = Store(f"sqlite:///{tmp_path}/.tminus/state.db")
    while not any(e["type"] == "hosts.retry_step" for e in store.events("loc-1")):
        assert time.monotonic() - t0 < 60 and proc.poll() is None
        time.sleep(0.2)
    time.sleep(1)
    assert store.deploy("loc-1")["state"] == "running"
    tm("abort", "loc-1", check=0)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert time.monotonic() - t0 < 45  # the sleep 60 was stopped
    assert "the retry stopped: aborted by alice" in err
    d = store.deploy("loc-1")
    assert d["state"] == "succeeded" and not d["abort_requested"]
    assert store.lock("loc", "production") is None
    assert [f["host"] for f in tm.json("status", "loc-1")["failed_hosts"]] == ["b"]
    assert not (tmp_path / "ran-b").exists()
    (tmp_path / "slow").unlink()
    tm("resume", "loc-1", "--retry-failed-hosts", check=0)
    assert (tmp_path / "ran-b").read_text() == "x\n"


def test_a_release_retry_puts_the_same_release_on_the_host_that_failed(
    fleet: SshdFleet, work: Path
) -> None:
    """A rolling `release` (default release id: a timestamp chosen once) where h2's deploy
    root is not writable: h2 fails its stage, max_fail tolerates it. Once writable, the retry
    stages and switches h2 to the *same* release id the others have, and the step's
    ``switched`` artifact lists every host.

    Mutation tried: `_merge` not updating ``switched``/``switched_back``: h2 is missing from
    ``switched`` and this test fails."""
    tm = Tm(work)
    src = work / "build"
    (src / "bin").mkdir(parents=True)
    (src / "VERSION").write_text("r1\n")
    app = work / "app"
    app.mkdir()
    app.chmod(0o777)
    (app / "h2").mkdir()
    (app / "h2").chmod(0o555)  # the login user cannot create releases/ here
    step = {
        "kind": "release",
        "on": "web",
        "path": f"{app}/${{host}}",
        "source": str(src),
        "max_fail": 1,
    }
    path = work / "rel.yaml"
    path.write_text(
        json.dumps(
            {"name": "rel", "targets": targets(fleet), "phases": [{"name": "p", "steps": [step]}]}
        )
    )
    tm("run", str(path), check=0)
    store = Store(f"sqlite:///{work}/.tminus/state.db")
    arts = store.step_rows("rel-1")["phase/0/step/0"]["artifacts"]
    assert arts["hosts"]["h2"]["status"] == "failed" and sorted(arts["switched"]) == ["h1", "h3"]
    rid = arts["release_id"]
    assert (app / "h1" / "current").readlink() == Path(f"releases/{rid}")
    assert not (app / "h2" / "current").exists()

    (app / "h2").chmod(0o777)
    tm("resume", "rel-1", "--retry-failed-hosts", check=0)
    arts = store.step_rows("rel-1")["phase/0/step/0"]["artifacts"]
    assert arts["release_id"] == rid and arts["hosts"]["h2"]["release_id"] == rid
    assert arts["hosts"]["h2"]["status"] == "ok" and arts["hosts"]["h2"]["switched"] is True
    assert sorted(arts["switched"]) == ["h1", "h2", "h3"] and arts["failed"] == 0
    for h in NAMES:
        assert (app / h / "current").readlink() == Path(f"releases/{rid}"), h
        assert (app / h / "current" / "VERSION").read_text() == "r1\n"
