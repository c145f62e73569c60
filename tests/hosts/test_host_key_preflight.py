"""Host-key failures stop `tminus run` in its preflight, exit 2, before anything runs
(issue #13, item 8): a CHANGED key and an unknown key, against real OpenSSH sshd
(:mod:`tminus.testing.sshd`), driven through the CLI.

"Nothing ran" is checked on the hosts themselves: sshd logs every accepted login and every
command it starts (``LogLevel VERBOSE``). A refused run starts no command on any host and never
logs into the host whose key it refused; the hosts whose keys passed were logged into by the
preflight (inside ``tminus run`` it opens the connection the deploy then uses:
:mod:`tminus.runloop`), and no deploy is created in the state store. A run that goes
through logs into each host exactly once, preflight and deploy together.

Mutations tried (each made a test here fail, then was restored):

- ``SshHost.check_host_key`` returning None for a key that differs (the CHANGED branch): the
  deploy starts, the ssh step fails on h2 and the phase pauses (exit 3; with
  ``on_failure: rollback`` it would roll back, exit 1) —
  ``test_a_changed_host_key_exits_2_before_anything_runs``;
- ``host_key_problems`` returning [] when ``accept_new_host_keys`` is set (as before): the
  changed key is let through — ``test_accept_new_does_not_accept_a_changed_key``;
- the old fixed preflight hint ("install what is missing, free disk space …") restored in
  ``launch._preflight``: the hint assertions fail — both exit-2 tests;
- ``check_host_key`` not fetching the key of an unknown host: no fingerprint in the message
  — ``test_an_unknown_host_key_exits_2_with_its_fingerprint_and_a_keyscan_hint``;
- ``SshHost._take_parked`` returning None (the deploy opens its own connections again): two
  logins per host — ``test_a_run_logs_into_each_host_once`` and the unknown-key test's run;
- ``open_ahead`` recording an accept-new key at once (``_hold_new_key`` ignored): the refused
  run appends h1's key — ``test_accept_new_records_a_new_key_only_when_the_deploy_uses_it``;
- ``open_ahead`` returning None on a HostKeyError: the changed key is let through, the
  deploy starts — every exit-2 test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import asyncssh

from tests.conftest import Tm
from tminus.store.store import Store
from tminus.testing.sshd import SshdFleet

HOSTS = ["h1", "h2", "h3"]


def write_plan(tm: Tm, fleet: SshdFleet, known: Path, **ssh: Any) -> str:
    hosts = {
        name: {
            "address": "127.0.0.1",
            "port": fleet[name].port,
            "user": fleet.user,
            "identity_file": str(fleet.identity_file),
        }
        for name in HOSTS
    }
    plan = {
        "name": "keys",
        "environment": "test",
        "targets": {
            "ssh": {"known_hosts": str(known), **ssh},
            "hosts": hosts,
            "groups": {"web": HOSTS},
        },
        "phases": [
            {
                "name": "deploy",
                "on_failure": "pause",
                "steps": [{"kind": "ssh", "on": "web", "command": "echo up"}],
            }
        ],
    }
    path = tm.cwd / "plan.yaml"
    path.write_text(json.dumps(plan))
    return str(path)


def logins(fleet: SshdFleet) -> list[int]:
    return [fleet[n].accepted() for n in HOSTS]


def sessions(fleet: SshdFleet) -> list[int]:
    return [fleet[n].sessions() for n in HOSTS]


def deploys(tm: Tm) -> list[Any]:
    db = tm.cwd / ".tminus" / "state.db"
    return Store(f"sqlite:///{db}").list_deploys() if db.exists() else []


def known_hosts_with(fleet: SshdFleet, path: Path, replace: dict[str, str | None]) -> Path:
    """The fleet's known_hosts, with the line of each host in ``replace`` swapped for the
    given line (None: removed)."""
    lines = []
    for name in HOSTS:
        line = replace.get(name, fleet[name].host_key_line)
        if line is not None:
            lines.append(line + "\n")
    path.write_text("".join(lines))
    return path


def other_key_line(fleet: SshdFleet, name: str) -> str:
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    return f"[127.0.0.1]:{fleet[name].port} {other[0]} {other[1]}"


def fingerprint(fleet: SshdFleet, name: str) -> str:
    key = asyncssh.read_private_key(str(fleet[name].dir / "ssh_host_ed25519_key"))
    return str(key.get_fingerprint("sha256"))


def test_a_changed_host_key_exits_2_before_anything_runs(fleet: SshdFleet, tm: Tm) -> None:
    known = known_hosts_with(fleet, tm.cwd / "known_hosts", {"h2": other_key_line(fleet, "h2")})
    plan = write_plan(tm, fleet, known)
    before, ran = logins(fleet), sessions(fleet)
    proc = tm("run", plan)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    port = fleet["h2"].port
    err = proc.stderr
    assert "preflight failed, nothing was run" in err
    assert f"host key of h2 (127.0.0.1 port {port}) CHANGED" in err
    assert f"it presents ssh-ed25519 key {fingerprint(fleet, 'h2')}" in err
    assert f"ssh-keygen -R '[127.0.0.1]:{port}' -f {known}" in err
    assert f"ssh-keyscan -p {port} 127.0.0.1 >> {known}" in err
    assert "h1 (" not in err and "h3 (" not in err  # their keys match
    hint = next(line for line in err.splitlines() if line.startswith("hint:"))
    assert "ssh-keyscan" in hint and "disk space" not in hint
    assert "Traceback" not in err
    assert logins(fleet)[1] == before[1]  # the host with the changed key was not logged into
    assert sessions(fleet) == ran  # no command started anywhere
    assert deploys(tm) == []  # no deploy was created


def test_accept_new_does_not_accept_a_changed_key(fleet: SshdFleet, tm: Tm) -> None:
    known = known_hosts_with(fleet, tm.cwd / "known_hosts", {"h3": other_key_line(fleet, "h3")})
    plan = write_plan(tm, fleet, known, accept_new_host_keys=True)
    before, ran = logins(fleet), sessions(fleet)
    proc = tm("run", plan)
    assert proc.returncode == 2, proc.stderr
    assert "host key of h3" in proc.stderr and "CHANGED" in proc.stderr
    assert logins(fleet)[2] == before[2] and sessions(fleet) == ran and deploys(tm) == []


def test_an_unknown_host_key_exits_2_with_its_fingerprint_and_a_keyscan_hint(
    fleet: SshdFleet, tm: Tm
) -> None:
    known = known_hosts_with(fleet, tm.cwd / "known_hosts", {"h3": None})
    plan = write_plan(tm, fleet, known)
    before, ran = logins(fleet), sessions(fleet)
    proc = tm("run", plan)
    assert proc.returncode == 2, proc.stderr
    port = fleet["h3"].port
    assert (
        f"unknown host key for h3 (127.0.0.1 port {port}): it presents ssh-ed25519 key "
        f"{fingerprint(fleet, 'h3')}, which is not in {known}"
    ) in proc.stderr
    hint = next(line for line in proc.stderr.splitlines() if line.startswith("hint:"))
    assert "ssh-keyscan" in hint and "disk space" not in hint
    assert logins(fleet)[2] == before[2] and sessions(fleet) == ran and deploys(tm) == []
    # the command the message gives does what it says: the run then goes through
    scan = subprocess.run(
        ["ssh-keyscan", "-p", str(port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    with known.open("a") as fh:
        fh.write(scan.stdout)
    before = logins(fleet)
    done = tm("run", plan)
    assert done.returncode == 0, done.stderr
    assert [a - b for a, b in zip(logins(fleet), before, strict=True)] == [1, 1, 1]


def test_a_run_logs_into_each_host_once(fleet: SshdFleet, tm: Tm) -> None:
    """The preflight's connection is the deploy's: one login per host for the whole run,
    and the step's command ran on every host over it."""
    known = known_hosts_with(fleet, tm.cwd / "known_hosts", {})
    plan = write_plan(tm, fleet, known)
    before, ran = logins(fleet), sessions(fleet)
    proc = tm("run", plan)
    assert proc.returncode == 0, proc.stderr
    assert [a - b for a, b in zip(logins(fleet), before, strict=True)] == [1, 1, 1]
    assert all(a > b for a, b in zip(sessions(fleet), ran, strict=True))


def test_accept_new_records_a_new_key_only_when_the_deploy_uses_it(
    fleet: SshdFleet, tm: Tm
) -> None:
    """Under accept_new_host_keys the preflight logs into a host whose key is new, but the
    key goes into known_hosts only when the deploy takes that connection: a run refused over
    another host's CHANGED key records nothing; the next run records it once."""
    known = known_hosts_with(
        fleet, tm.cwd / "known_hosts", {"h1": None, "h3": other_key_line(fleet, "h3")}
    )
    plan = write_plan(tm, fleet, known, accept_new_host_keys=True)
    text = known.read_text()
    proc = tm("run", plan)
    assert proc.returncode == 2, proc.stderr
    assert "host key of h3" in proc.stderr and "unknown host key for h1" not in proc.stderr
    assert known.read_text() == text  # h1's new key was not recorded
    known_hosts_with(fleet, known, {"h1": None})  # h3 re-keyed for real: recorded again
    before = logins(fleet)
    done = tm("run", plan)
    assert done.returncode == 0, done.stderr
    port = fleet["h1"].port
    added = [line for line in known.read_text().splitlines() if f"[127.0.0.1]:{port} " in line]
    assert len(added) == 1 and fleet["h1"].host_key_line.split()[2] in added[0]
    assert [a - b for a, b in zip(logins(fleet), before, strict=True)] == [1, 1, 1]


def test_a_host_that_cannot_be_reached_is_left_to_the_run(fleet: SshdFleet, tm: Tm) -> None:
    known = known_hosts_with(fleet, tm.cwd / "known_hosts", {})
    plan = write_plan(tm, fleet, known)
    fleet["h2"].kill()
    try:
        proc = tm("run", plan)
    finally:
        fleet["h2"].start()
    # not a preflight refusal: the deploy ran, and h2 failed as a host
    assert "preflight failed" not in proc.stderr
    assert proc.returncode != 2, proc.stderr
    assert len(deploys(tm)) == 1
    assert "cannot connect to h2" in proc.stdout + proc.stderr
