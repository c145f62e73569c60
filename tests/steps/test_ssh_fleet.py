"""`ssh` and `upload` on ten real OpenSSH sshd hosts, driven through the `tminus` CLI:
max_fail counted across batches, failed hosts leaving the rollout, per-host timeout and
retries, run_once, guided failure with `resume --exclude-host`, upload skipping unchanged
files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.conftest import Tm
from tests.steps.conftest import NAMES
from tminus.engine.status import deploy_status
from tminus.store.store import Store
from tminus.testing.sshd import SshdFleet


def targets(fleet: SshdFleet, **groups: list[str]) -> dict[str, Any]:
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
    return {"hosts": hosts, "groups": {"web": NAMES, **groups}}


def write_plan(work: Path, name: str, tg: dict[str, Any], *phases: dict[str, Any]) -> str:
    path = work / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "targets": tg, "phases": list(phases)}))
    return str(path)


def artifacts(work: Path, deploy: str) -> dict[str, dict[str, Any]]:
    rows = Store(f"sqlite:///{work}/.tminus/state.db").step_rows(deploy)
    return {k: r["artifacts"] or {} for k, r in rows.items()}


def statuses(arts: dict[str, Any]) -> dict[str, str]:
    return {h: r["status"] for h, r in arts["hosts"].items()}


def test_max_fail_batches_timeouts_retries_and_run_once(fleet: SshdFleet, work: Path) -> None:
    tm = Tm(work)
    tg = targets(fleet, pair=["h1", "h3"], once=["a0", "h4", "h6"])
    tg["hosts"]["a0"] = {"address": "127.0.0.1", "port": 1}  # nothing listens: unreachable
    tg["ssh"] = {"accept_new_host_keys": True, "connect_timeout": "3s"}
    fails_on = "case ${host} in %s) exit 3;; esac; echo done-${host}"
    steps = [
        {  # 2 of 10 may fail ("20%"), counted across batches of one
            "kind": "ssh",
            "id": "a",
            "on": "web",
            "batch": 1,
            "max_fail": "20%",
            "command": fails_on % "h2|h5",
        },
        {"kind": "ssh", "id": "b", "on": "web", "command": "echo b"},  # h2, h5: out
        {  # the first failure stops it before its next batch
            "kind": "ssh",
            "id": "c",
            "on": "web",
            "batch": 3,
            "command": fails_on % "h7",
        },
        {  # timeout and retries per host: h1 times out twice, h3 fails once then passes
            "kind": "ssh",
            "id": "d",
            "on": "pair",
            "max_fail": 1,
            "timeout": "1s",
            "retries": {"attempts": 2, "delay": "0.1s"},
            "command": f"if [ ${{host}} = h1 ]; then sleep 10; fi; f={work}/try-${{host}}; "
            'if [ ! -e "$f" ]; then touch "$f"; exit 1; fi; echo second',
        },
        {  # the first reachable host of `once` (a0 is not)
            "kind": "ssh",
            "id": "e",
            "on": "once",
            "run_once": True,
            "command": f"echo migrated >> {work}/once-${{host}}; echo ran on ${{host}}",
        },
    ]
    plan = write_plan(work, "sem", tg, {"name": "p", "on_failure": "continue", "steps": steps})
    tm("run", plan, check=0)
    arts = artifacts(work, "sem-1")
    rows = Store(f"sqlite:///{work}/.tminus/state.db").step_rows("sem-1")
    took = rows["phase/0/step/3"]["ended_at"] - rows["phase/0/step/3"]["started_at"]
    a, b, c, d, e = (arts[f"phase/0/step/{k}"] for k in range(5))

    assert statuses(a) == {h: "failed" if h in ("h2", "h5") else "ok" for h in NAMES}
    assert a["batches"] == [[h] for h in NAMES] and a["failed"] == 2
    assert a["hosts"]["h2"]["exit"] == 3

    assert statuses(b) == {h: "skipped" if h in ("h2", "h5") else "ok" for h in NAMES}
    assert "failed earlier in phase/0/step/0" in b["hosts"]["h2"]["error"]

    # c: h2/h5 are out; batches of 3 over the other 8; h7's batch is the last that runs.
    assert c["batches"] == [["h1", "h3", "h4"], ["h6", "h7", "h8"], ["h9", "h10"]]
    sc = statuses(c)
    assert sc["h7"] == "failed" and sc["h6"] == sc["h8"] == "ok"
    assert sc["h9"] == sc["h10"] == "skipped" and sc["h2"] == "skipped"
    assert "not run" in c["hosts"]["h9"]["error"]

    assert statuses(d) == {"h1": "failed", "h3": "ok"}
    assert d["hosts"]["h1"]["error"] == "timed out after 1s"
    assert d["hosts"]["h1"]["attempts"] == 2 and d["hosts"]["h3"]["attempts"] == 2
    # per host: h1's 10 s sleeps were cut at 1 s, twice; the step as a whole ran longer
    # than its 1 s timeout
    assert 2 <= took.total_seconds() < 8

    assert e.get("host") == "h4" and e["stdout"] == "ran on h4", rows["phase/0/step/4"]["error"]
    assert statuses(e) == {"a0": "skipped", "h4": "ok", "h6": "skipped"}
    assert "unreachable" in e["hosts"]["a0"]["error"]
    assert (work / "once-h4").read_text() == "migrated\n"
    assert not (work / "once-h6").exists()

    # stdout, stderr and exit status of each host are in the event log
    events = Store(f"sqlite:///{work}/.tminus/state.db").events("sem-1")
    results = [e["data"] for e in events if e["type"] == "host.result"]
    h4 = next(r for r in results if r["step"] == "phase/0/step/0" and r["host"] == "h4")
    assert (h4["stdout"], h4["exit"], h4["status"]) == ("done-h4\n", 0, "ok")

    steps_state = {k: r["state"] for k, r in rows.items()}
    assert steps_state["phase/0/step/0"] == "succeeded"
    assert steps_state["phase/0/step/2"] == "ignored"


def test_exclude_host_then_resume(fleet: SshdFleet, work: Path) -> None:
    tm = Tm(work)
    tg = targets(fleet, four=["h1", "h2", "h3", "h4"])
    steps = [
        {
            "kind": "ssh",
            "on": "four",
            "command": f"echo x >> {work}/first-${{host}}; test ${{host}} != h3",
        },
        {"kind": "ssh", "on": "four", "command": f"echo y >> {work}/second-${{host}}"},
    ]
    plan = write_plan(work, "ex", tg, {"name": "p", "on_failure": "pause", "steps": steps})
    tm("run", plan, check=3)
    paused = deploy_status(Store(f"sqlite:///{work}/.tminus/state.db"), "ex-1")
    assert paused["state"] == "paused"
    assert paused["fleet"]["hosts"]["h3"]["phase/0/step/0"] == "failed"

    proc = tm("resume", "ex-1", "--exclude-host", "h9x", check=2)
    assert "no host 'h9x'" in proc.stderr
    tm("resume", "ex-1", "--exclude-host", "h3", check=0)

    for h in ("h1", "h2", "h3", "h4"):  # the resume did not run the step again where it was ok
        assert (work / f"first-{h}").read_text() == "x\n"
    assert sorted(p.name for p in work.glob("second-*")) == ["second-h1", "second-h2", "second-h4"]
    fleet_table = deploy_status(Store(f"sqlite:///{work}/.tminus/state.db"), "ex-1")["fleet"]
    assert fleet_table["excluded"] == {"h3": "alice"}
    keys = ("phase/0/step/0", "phase/0/step/1")
    assert fleet_table["hosts"]["h3"] == dict.fromkeys(keys, "excluded")
    assert fleet_table["hosts"]["h1"] == dict.fromkeys(keys, "ok")
    text = tm("status", "ex-1", check=0).stdout
    h3_row = next(line for line in text.splitlines() if line.strip().startswith("h3 "))
    assert h3_row.split() == ["h3", "excluded", "excluded", "(excluded", "by", "alice)"]
    events = Store(f"sqlite:///{work}/.tminus/state.db").events("ex-1")
    assert [(e["message"], e["data"]) for e in events if e["type"] == "host.excluded"] == [
        ("alice excluded host h3", {"host": "h3", "by": "alice"})
    ]


def test_upload_skips_unchanged_files(fleet: SshdFleet, work: Path) -> None:
    tm = Tm(work)
    src = work / "conf"
    (src / "nested" / "deep").mkdir(parents=True)
    files = {
        "app.env": "A=1\n",
        "nested/one.txt": "one\n",
        "nested/deep/two.bin": "two\x00\n",
        "name with space.txt": "s\n",
    }
    for rel, text in files.items():
        (src / rel).write_text(text)
    upload = {"kind": "upload", "on": "web", "src": f"{src}/", "dest": f"{work}/up/${{host}}/"}
    steps = [
        {**upload, "id": "u1", "mode": "0640"},
        {**upload, "id": "u2", "mode": "0640"},
        {"kind": "run", "command": f"echo A=2 > {src}/app.env"},
        {**upload, "id": "u3", "mode": "0640"},
        {  # a single file, to a file name
            "kind": "upload",
            "id": "u4",
            "on": "web",
            "src": f"{src}/app.env",
            "dest": f"{work}/single/${{host}}.env",
        },
    ]
    steps.append({"kind": "ssh", "on": "web", "command": "echo token=${token}"})
    path = Path(write_plan(work, "up", targets(fleet), {"name": "p", "steps": steps}))
    plan = json.loads(path.read_text())
    plan["secrets"] = {"token": "${env:FLEET_TOKEN}"}
    path.write_text(json.dumps(plan))
    tm("run", str(path), check=0, env={"FLEET_TOKEN": "s3cr3t-fleet-token"})
    events = Store(f"sqlite:///{work}/.tminus/state.db").events("up-1")
    said = [e["data"]["stdout"] for e in events if e["type"] == "host.result"]
    assert said[-10:] == ["token=***\n"] * 10  # each host's stdout, the secret masked
    assert "s3cr3t" not in json.dumps([e["data"] for e in events], default=str)
    arts = artifacts(work, "up-1")
    u1, u2, u3, u4 = (arts[f"phase/0/step/{k}"] for k in (0, 1, 3, 4))
    assert (u1["files"], u1["sent"], u1["unchanged"]) == (4, 40, 0)
    assert (u2["sent"], u2["unchanged"]) == (0, 40)  # the second run sends nothing
    assert (u3["sent"], u3["unchanged"]) == (10, 30)  # only the changed file, on each host
    assert all(
        r == {"status": "ok", "exit": 0, "attempts": 1, "batch": 1, "sent": 0, "unchanged": 4}
        for r in u2["hosts"].values()
    )
    assert u4["sent"] == 10
    files["app.env"] = "A=2\n"
    for h in NAMES:
        root = work / "up" / h
        for rel, text in files.items():
            assert (root / rel).read_text() == text
            assert (root / rel).stat().st_mode & 0o777 == 0o640
        assert not list(root.glob(".tminus-upload-*"))  # no staging directory left
        assert (work / "single" / f"{h}.env").read_text() == "A=2\n"
    digest = hashlib.sha256(b"A=2\n").hexdigest()
    assert hashlib.sha256((work / "up" / "h5" / "app.env").read_bytes()).hexdigest() == digest


def test_resume_kills_a_dead_runners_remote_command_first(fleet: SshdFleet, work: Path) -> None:
    """kill -9 of the runner while an `ssh` step runs a long command on h1 (real sshd): the
    remote command outlives its runner (nothing hangs it up); `tminus resume` kills its
    process group on h1 over SSH before anything else, says so, then pauses on the step
    (not idempotent).

    Mutation tried: ``_reap`` passes no ``remote`` callback (remote groups "not reached"):
    the ticks keep growing and this fails."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tm = Tm(work)
    ticks = work / "remote-ticks"
    plan = write_plan(
        work,
        "remote-orphan",
        targets(fleet),
        {
            "name": "one",
            "steps": [
                {
                    "kind": "ssh",
                    "on": "h1",
                    "command": f"while true; do echo t >> {ticks}; sleep 0.1; done",
                }
            ],
        },
    )
    runner = subprocess.Popen(
        [sys.executable, "-m", "tminus", "run", plan],
        cwd=work,
        env=tm.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while not ticks.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert ticks.exists(), "the remote command never started"
        time.sleep(0.5)  # its process group is recorded right after its first line
    finally:
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
    size = ticks.stat().st_size
    time.sleep(0.5)
    assert ticks.stat().st_size > size, "the remote command died with its runner: no orphan"
    proc = tm("resume", "remote-orphan-1")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "killed process group" in proc.stderr and "on h1" in proc.stderr, proc.stderr
    size = ticks.stat().st_size
    time.sleep(0.5)
    assert ticks.stat().st_size == size, "the remote orphan still runs"
    types = [e["type"] for e in tm.json("log", "remote-orphan-1")]
    assert types.index("runner.orphans_killed") < types.index("deploy.resumed")


def test_a_hook_runs_on_each_batch_host_over_real_ssh(fleet: SshdFleet, work: Path) -> None:
    """`on: "${host}"` in an after_batch hook, on real sshd hosts: the check runs on each host
    of the batch (its own SSH connection: the hook sees that host's name), and its failure
    is that host's, counted against max_fail (h3 fails here)."""
    tm = Tm(work)
    check = {
        "kind": "ssh",
        "name": "health on the host",
        "on": "${host}",
        "command": f'echo "${{host}}" > {work}/checked-${{host}}; test "${{host}}" != h3',
    }
    plan = write_plan(
        work,
        "hookhost",
        targets(fleet, trio=["h1", "h2", "h3"]),
        {
            "name": "one",
            "steps": [
                {
                    "kind": "ssh",
                    "id": "a",
                    "on": "trio",
                    "batch": 3,
                    "max_fail": 1,
                    "command": "true",
                    "after_batch": [check],
                }
            ],
        },
    )
    proc = tm("run", plan)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for h in ("h1", "h2", "h3"):
        assert (work / f"checked-{h}").read_text() == f"{h}\n"
    arts = artifacts(work, "hookhost-1")["phase/0/step/0"]
    assert statuses(arts) == {"h1": "ok", "h2": "ok", "h3": "failed"}
    assert "health on the host" in arts["hosts"]["h3"]["error"]
