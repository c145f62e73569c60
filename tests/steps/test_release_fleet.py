"""`release` on ten real OpenSSH sshd hosts, driven through the `tminus` CLI: a rolling
release batch by batch, a host killed mid-rollout with the rollback that follows, and unknown
host keys.

Every "host" is a local sshd (own port, own host key) logging in as the test user, so they
share one filesystem: plans put each host's deploy root under ``${host}``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import Tm
from tests.steps.conftest import NAMES
from tminus.engine.status import deploy_status
from tminus.store.store import Store
from tminus.testing.sshd import SshdFleet


def hosts(fleet: SshdFleet, *, known_hosts: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i in fleet.instances:
        h: dict[str, Any] = {
            "address": "127.0.0.1",
            "port": i.port,
            "user": fleet.user,
            "identity_file": str(fleet.identity_file),
        }
        if known_hosts:
            h["known_hosts"] = str(fleet.known_hosts)
        out[i.name] = h
    return out


def write_plan(work: Path, name: str, targets: dict[str, Any], *phases: dict[str, Any]) -> str:
    path = work / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "targets": targets, "phases": list(phases)}))
    return str(path)


def build(work: Path, version: str) -> Path:
    src = work / f"build-{version}"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "app").write_text(f"#!/bin/sh\necho {version}\n")
    (src / "bin" / "app").chmod(0o755)
    (src / "VERSION").write_text(version + "\n")
    return src


def release(work: Path, src: Path, rid: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "release",
        "on": "web",
        "path": f"{work}/app/${{host}}",
        "source": str(src),
        "release_id": rid,
        **extra,
    }


def current(work: Path, host: str) -> str:
    return str((work / "app" / host / "current").readlink())


def store(work: Path) -> Store:
    return Store(f"sqlite:///{work}/.tminus/state.db")


def first_release(tm: Tm, work: Path, fleet: SshdFleet) -> None:
    targets = {"hosts": hosts(fleet), "groups": {"web": NAMES}}
    plan = write_plan(
        work, "v1", targets, {"name": "deploy", "steps": [release(work, build(work, "r1"), "r1")]}
    )
    tm("run", plan, check=0)
    assert {current(work, h) for h in NAMES} == {"releases/r1"}


def test_rolling_release_switches_batch_by_batch(fleet: SshdFleet, work: Path) -> None:
    tm = Tm(work)
    first_release(tm, work, fleet)
    targets = {"hosts": hosts(fleet), "groups": {"web": NAMES}}
    app = f"{work}/app"
    step = release(
        work,
        build(work, "r2"),
        "r2",
        id="rel",
        batch=[1, 3],
        keep=2,
        after_batch=[
            {"kind": "run", "command": f"echo ${{batch_index}}:${{batch_hosts}} >> {work}/log"},
            {  # per host (it uses ${host}): the host is live on r2 when its batch ends
                "kind": "run",
                "command": f'test "$(readlink {app}/${{host}}/current)" = releases/r2 '
                f"&& touch {work}/checked-${{host}}",
            },
        ],
    )
    plan = write_plan(work, "v2", targets, {"name": "deploy", "steps": [step]})
    tm("run", plan, check=0)

    rows = store(work).step_rows("v2-1")
    arts = rows["phase/0/step/0"]["artifacts"]
    batches = [["h1"], ["h2", "h3", "h4"], ["h5", "h6", "h7"], ["h8", "h9", "h10"]]
    assert arts["batches"] == batches
    assert sorted(arts["switched"]) == sorted(NAMES)
    assert {h: r["status"] for h, r in arts["hosts"].items()} == dict.fromkeys(NAMES, "ok")
    # Each host's switch is an event; batch k is live before batch k+1 switches.
    at: dict[str, datetime] = {}
    for e in store(work).events("v2-1"):
        d = e["data"] or {}
        if e["type"] == "host.result" and d.get("step") == "phase/0/step/0" and not d.get("hook"):
            assert d["switched"] is True and d["release_id"] == "r2"
            at[d["host"]] = e["ts"]
    assert sorted(at) == sorted(NAMES)
    for earlier, later in itertools.pairwise(batches):
        assert max(at[h] for h in earlier) < min(at[h] for h in later)
    assert (work / "log").read_text().splitlines() == [
        f"{k}:{' '.join(b)}" for k, b in enumerate(batches, 1)
    ]
    for h in NAMES:
        assert current(work, h) == "releases/r2"
        assert (work / f"checked-{h}").exists()
        root = work / "app" / h
        assert (root / ".tminus" / "r2.previous").read_text() == "releases/r1\n"
        assert (root / "releases" / "r2" / "bin" / "app").read_text().endswith("r2\n")
        assert sorted(p.name for p in (root / "releases").iterdir()) == ["r1", "r2"]


def test_killed_host_max_fail_and_rollback(fleet: SshdFleet, work: Path) -> None:
    tm = Tm(work)
    first_release(tm, work, fleet)
    targets = {"hosts": hosts(fleet), "groups": {"web": NAMES}}
    # Before batch 2 (h3 h4 h5 h6) the hook tells the test to kill h3, and waits for it.
    signal = (
        f'if [ "${{batch_index}}" = 2 ]; then touch {work}/kill-h3; '
        f"while [ ! -e {work}/h3-dead ]; do sleep 0.02; done; fi"
    )
    step = release(
        work,
        build(work, "r2"),
        "r2",
        id="rel",
        batch=[2, 4],
        max_fail=1,
        before_batch=[{"kind": "run", "name": "drain", "command": signal}],
    )
    smoke = {"kind": "run", "name": "smoke test", "command": "exit 1"}
    plan = write_plan(work, "v2", targets, {"name": "deploy", "steps": [step, smoke]})

    def killer() -> None:
        deadline = time.monotonic() + 60
        while not (work / "kill-h3").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        fleet["h3"].kill()
        (work / "h3-dead").touch()

    try:
        with ThreadPoolExecutor(1) as pool:
            kill = threading.Thread(target=killer, daemon=True)
            kill.start()
            proc = pool.submit(tm, "run", plan).result(timeout=120)
            kill.join(5)
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        assert "rolled_back" in proc.stderr, proc.stdout

        rows = store(work).step_rows("v2-1")
        rel = rows["phase/0/step/0"]
        # one failed host was within max_fail: 1, so the step succeeded; then the rollback undid
        # it, and status says so
        assert rel["state"] == "rolled_back"
        hosts_ = rel["artifacts"]["hosts"]
        assert hosts_["h3"]["status"] == "failed" and "h3" in hosts_["h3"]["error"]
        assert all(hosts_[h]["status"] == "ok" for h in NAMES if h != "h3")
        assert sorted(rel["artifacts"]["switched"]) == sorted(h for h in NAMES if h != "h3")
        # The rollback switched every host that switched back to r1 and marked r2 bad.
        undo = next(r for k, r in rows.items() if k.startswith("rollback/"))
        assert undo["state"] == "succeeded"
        back = undo["artifacts"]["hosts"]
        assert back["h3"]["status"] == "skipped" and "never switched" in back["h3"]["error"]
        for h in NAMES:
            assert current(work, h) == "releases/r1", h
            mark = work / "app" / h / "releases" / "r2" / "BAD_RELEASE"
            if h == "h3":
                assert not mark.exists()
                continue
            assert back[h]["rollback"] == "switched-back releases/r1"
            assert mark.read_text().startswith("rolled back by alice at ")
            assert "deploy v2-1" in mark.read_text()

        status = deploy_status(store(work), "v2-1")
        assert status["state"] == "rolled_back"
        table = status["fleet"]
        rel_key = "phase/0/step/0"
        assert table["hosts"]["h3"][rel_key] == "failed"
        assert table["hosts"]["h1"][rel_key] == "ok"
        text = tm("status", "v2-1", check=0).stdout
        h3_row = next(line for line in text.splitlines() if line.strip().startswith("h3 "))
        assert "failed" in h3_row and "skipped" in h3_row
        events = [e for e in store(work).events("v2-1") if e["type"] == "host.result"]
        h3 = [e for e in events if e["data"]["host"] == "h3" and e["key"] == "phase/0/step/0"]
        assert [e["message"].split(":")[:2] for e in h3] == [["h3", " failed"]]
        assert h3[0]["data"]["exit"] is None and "cannot connect to h3" in h3[0]["data"]["stderr"]
    finally:
        fleet["h3"].start()


def test_unknown_host_key_is_refused_unless_accepted(fleet: SshdFleet, work: Path) -> None:
    tm = Tm(work)
    known = work / "known_hosts"
    ssh = {"known_hosts": str(known)}
    targets = {"ssh": ssh, "hosts": hosts(fleet, known_hosts=False), "groups": {"web": NAMES}}
    step = {"kind": "ssh", "on": "web", "command": "echo up"}
    plan = write_plan(work, "keys", targets, {"name": "deploy", "steps": [step]})
    proc = tm("run", plan, check=2)
    port = fleet["h1"].port
    assert f"unknown host key for h1 (127.0.0.1 port {port})" in proc.stderr
    assert "accept_new_host_keys: true" in proc.stderr
    assert "nothing was run" in proc.stderr
    assert store(work).list_deploys() == []  # no deploy was even created
    assert not known.exists()

    targets["ssh"] = {**ssh, "accept_new_host_keys": True}
    plan = write_plan(work, "keys", targets, {"name": "deploy", "steps": [step]})
    tm("run", plan, check=0)
    lines = known.read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(
        f"[127.0.0.1]:{i.port}" for i in fleet.instances
    )
    # now they are known: accepted without the option
    tm(
        "run",
        write_plan(work, "keys", {**targets, "ssh": ssh}, {"name": "d", "steps": [step]}),
        check=0,
    )
