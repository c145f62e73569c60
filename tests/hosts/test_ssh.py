"""SshHost and HostPool against real OpenSSH sshd instances on loopback ports."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tminus.hosts.base import CompletedRun
from tminus.hosts.pool import HostPool
from tminus.hosts.ssh import HostKeyError, SshHost, SshOptions, SshSettings
from tminus.testing.sshd import SshdFleet

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_ten_hosts_concurrently_one_connection_each(fleet: SshdFleet) -> None:
    before = {i.name: i.accepted() for i in fleet.instances}

    async def go() -> tuple[list[list[str]], int, list[int]]:
        async with HostPool(fleet.targets()) as pool:
            names = [i.name for i in fleet.instances]
            results = await asyncio.gather(
                *(pool.ssh(n).run(f"echo {n}-{k}; whoami") for n in names for k in range(3))
            )
            again = await asyncio.gather(*(pool.ssh(n).run("echo again") for n in names))
            assert all(r.ok and r.stdout == "again\n" for r in again)
            outs = [[r.stdout for r in results if r.host == n] for n in names]
            return outs, pool.connections_opened, [pool.ssh(n).connections_opened for n in names]

    outs, opened, per_host = run(go())
    for inst, out in zip(fleet.instances, outs, strict=True):
        assert sorted(out) == [f"{inst.name}-{k}\n{fleet.user}\n" for k in range(3)]
    assert opened == 10 and per_host == [1] * 10
    # sshd's own log agrees: exactly one accepted login per host for 4 commands each.
    assert {i.name: i.accepted() - before[i.name] for i in fleet.instances} == {
        i.name: 1 for i in fleet.instances
    }


def test_env_cwd_exit_status_and_list_commands(fleet: SshdFleet) -> None:
    async def go() -> list[CompletedRun]:
        async with HostPool(fleet.targets()) as pool:
            h = pool.ssh("h1")
            a = await h.run(
                'printf "%s|" "$GREETING"; pwd', env={"GREETING": "it's a 'test'"}, cwd="/tmp"
            )
            b = await h.run("echo out; echo err >&2; exit 3")
            c = await h.run(["printf", "%s\n", "two words", "$HOME"])
            d = await h.run("true", cwd="/does/not/exist")
            return [a, b, c, d]

    a, b, c, d = run(go())
    assert a.ok and a.stdout == "it's a 'test'|/tmp\n"
    assert (b.exit_status, b.stdout, b.stderr) == (3, "out\n", "err\n")
    assert c.stdout == "two words\n$HOME\n"
    assert d.exit_status == 1 and "does/not/exist" in d.stderr


def test_streaming_lines(fleet: SshdFleet) -> None:
    seen: list[tuple[str, str]] = []

    async def go() -> None:
        async with HostPool(fleet.targets()) as pool:
            r = await pool.ssh("h2").run(
                "echo one; echo warn >&2; echo two", on_line=lambda s, line: seen.append((s, line))
            )
            assert r.ok

    run(go())
    assert [x for x in seen if x[0] == "stdout"] == [("stdout", "one"), ("stdout", "two")]
    assert [x for x in seen if x[0] == "stderr"] == [("stderr", "warn")]


def test_timeout_kills_the_remote_process_group(fleet: SshdFleet) -> None:
    token = uuid.uuid4().hex[:8]

    async def go() -> tuple[CompletedRun, CompletedRun]:
        async with HostPool(fleet.targets()) as pool:
            h = pool.ssh("h3")
            r = await h.run(f"sleep 30 & sleep 31; echo never {token}", timeout=0.5)
            await asyncio.sleep(0.3)
            left = await h.run("ps -eo stat=,args= | grep '^[^Z].*sleep 3[01]$' || true")
            return r, left

    r, left = run(go())
    assert r.timed_out and not r.ok and "never" not in r.stdout
    assert r.duration < 5
    assert left.stdout == ""


def test_become_runs_as_root_through_sudo(fleet: SshdFleet) -> None:
    assert fleet.can_become, "sudo is not set up for the test user (see ensure_sudoers)"

    async def go() -> tuple[CompletedRun, CompletedRun]:
        async with HostPool(fleet.targets(become=True)) as pool:
            h = pool.ssh("h4")
            return await h.run("whoami; echo $X", env={"X": "kept"}), await h.run(
                "sleep 30", timeout=0.5
            )

    who, slow = run(go())
    assert who.ok and who.stdout == "root\nkept\n", who
    assert slow.timed_out


def test_a_posix_sh_login_shell_runs_the_script_itself_with_a_clean_shell(
    fleet: SshdFleet,
) -> None:
    """The test user's login shell is /bin/sh. The first command on a connection runs under
    ``exec sh -c`` (its shell's command line is the script alone); its marker names the
    login shell, so later commands run in the login shell itself, one process fewer (that
    shell's command line holds the marker too). Either way, and under ``become``, the script
    sees no positional parameters and no marker variable.

    Mutations tried: ``self._direct = conn`` removed from ``SshHost._run_on``: the second
    command still runs under ``exec sh -c`` and the command-line assertion fails;
    ``set --; unset _tm_t`` removed from the marker: ``$#`` is 50 (/proc stat fields)
    in direct and become runs and ``0:unset`` fails."""
    probe = 'tr "\\0\\n" "  " </proc/$$/cmdline; echo; echo "$#:${_tm_t-unset}"'

    async def go() -> list[CompletedRun]:
        async with HostPool(fleet.targets()) as pool:
            h = pool.ssh("h6")
            runs = [await h.run(probe), await h.run(probe)]
        async with HostPool(fleet.targets(become=True)) as pool:
            runs += [await pool.ssh("h6").run(probe), await pool.ssh("h6").run(probe)]
        return runs

    first, second, *became = run(go())
    assert first.ok and second.ok, (first, second)
    assert "tminus-pgid" not in first.stdout.splitlines()[0], first.stdout
    assert "tminus-pgid" in second.stdout.splitlines()[0], second.stdout
    assert [r.stdout.splitlines()[1] for r in (first, second, *became)] == ["0:unset"] * 4


def test_unknown_host_key_is_refused_then_accepted_when_asked(
    fleet: SshdFleet, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    inst = fleet["h5"]
    target = inst.target(known_hosts=str(known))

    async def go(accept: bool) -> CompletedRun:
        async with HostPool({"h5": target}, options=SshOptions(accept_new_host_keys=accept)) as p:
            return await p.ssh("h5").run("echo in")

    with pytest.raises(HostKeyError) as err:
        run(go(False))
    msg = str(err.value)
    fingerprint = inst.host_key_line.split()[2]
    assert "unknown host key for h5" in msg and f"port {inst.port}" in msg
    assert "ssh-ed25519" in msg and "SHA256:" in msg
    assert "accept_new_host_keys" in (err.value.hint or "")
    assert not known.exists()

    r = run(go(True))
    assert r.ok
    assert known.read_text().split() == [f"[127.0.0.1]:{inst.port}", "ssh-ed25519", fingerprint]
    assert run(go(False)).ok


def test_changed_host_key_is_refused_even_with_accept_new(fleet: SshdFleet, tmp_path: Path) -> None:
    other = fleet["h6"].host_key_line.split(None, 1)[1]
    inst = fleet["h7"]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{inst.port} {other}\n")
    host = SshHost(
        SshSettings.from_target("h7", inst.target(known_hosts=str(known))),
        SshOptions(accept_new_host_keys=True),
    )

    async def go() -> None:
        async with host:
            await host.run("true")

    with pytest.raises(HostKeyError) as err:
        run(go())
    assert "CHANGED" in str(err.value) and "ssh-keygen -R" in (err.value.hint or "")
    assert known.read_text().count("\n") == 1


def test_killed_host_fails_without_raising_and_reconnects(fleet: SshdFleet) -> None:
    victim = fleet["h8"]
    names = [i.name for i in fleet.instances]

    async def go() -> None:
        async with HostPool(fleet.targets()) as pool:
            first = await asyncio.gather(*(pool.ssh(n).run("echo up") for n in names))
            assert all(r.ok for r in first)
            slow = asyncio.ensure_future(pool.ssh("h8").run("sleep 20; echo late"))
            await asyncio.sleep(0.3)
            victim.kill()  # sshd, its connection and the session die mid-command
            dead = await asyncio.wait_for(slow, 15)
            assert dead.exit_status is None and not dead.timed_out
            assert "connection to h8" in dead.stderr and "lost" in dead.stderr
            after = await asyncio.gather(*(pool.ssh(n).run("echo still") for n in names))
            by = {r.host: r for r in after}
            assert by["h8"].exit_status is None and "cannot connect to h8" in by["h8"].stderr
            assert all(by[n].ok for n in names if n != "h8")
            victim.start()
            back = await pool.ssh("h8").run("echo back")
            assert back.ok and back.stdout == "back\n"
            assert pool.ssh("h8").connections_opened == 2

    try:
        run(go())
    finally:
        victim.start()


def test_put_and_sha256(fleet: SshdFleet, tmp_path: Path) -> None:
    local = tmp_path / "release.tar"
    local.write_bytes(os.urandom(300_000))
    want = hashlib.sha256(local.read_bytes()).hexdigest()
    remote = f"/tmp/tminus-put-{uuid.uuid4().hex}"
    root_only = tmp_path / "root-only"
    root_only.mkdir(mode=0o700)

    async def go() -> None:
        async with HostPool(fleet.targets()) as pool:
            h = pool.ssh("h9")
            assert await h.sha256(remote) is None
            await h.put(local, remote)
            assert await h.sha256(remote) == want
            r = await h.run(f"ls -a {os.path.dirname(remote)} | grep -c tminus-put- || true")
            assert r.stdout.strip() == "1"  # no temporary file left behind
            await h.run(f"rm -f {remote}")
        async with HostPool(fleet.targets(become=True)) as pool:
            h = pool.ssh("h9")
            await h.put(local, str(root_only / "release.tar"))
            assert await h.sha256(str(root_only / "release.tar")) == want

    run(go())
    assert (root_only / "release.tar").read_bytes() == local.read_bytes()


def test_more_commands_than_sessions_share_the_connection(fleet: SshdFleet) -> None:
    async def go() -> tuple[list[bool], int]:
        async with HostPool(fleet.targets(), options=SshOptions(max_sessions=4)) as pool:
            h = pool.ssh("h10")
            rs = await asyncio.gather(*(h.run(f"sleep 0.1; echo {k}") for k in range(25)))
            return [r.ok for r in rs], h.connections_opened

    oks, opened = run(go())
    assert all(oks) and opened == 1


def test_unreachable_host_is_a_failed_run(fleet: SshdFleet) -> None:
    async def go() -> CompletedRun:
        target = fleet["h1"].target(port=1)  # nothing listens on port 1
        async with HostPool({"gone": target}, options=SshOptions(connect_timeout=3)) as pool:
            return await pool.ssh("gone").run("true")

    r = run(go())
    assert r.exit_status is None and "cannot connect to gone" in r.stderr
