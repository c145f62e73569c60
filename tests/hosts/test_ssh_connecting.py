"""Connection set-up over a pool of real sshd hosts: handshakes are bounded across the pool
(``SshOptions.max_connecting``) while commands still run on every host at once, and the test
fleet's ports stay out of the range the kernel hands to outgoing connections."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tminus.hosts.pool import HostPool
from tminus.hosts.ssh import SshHost, SshOptions
from tminus.testing.sshd import SshdFleet


def test_handshakes_are_bounded_across_the_pool(
    fleet: SshdFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten hosts, max_connecting 2: never more than two handshakes (connect, key exchange,
    login) at once, every host connected once and its command run.

    Mutation tried: ``async with self._connecting`` removed from ``SshHost.connect``: all ten
    handshakes run at once and this fails."""
    real_open = SshHost._open
    now = {"in": 0, "max": 0}

    async def counted(self: SshHost) -> Any:
        now["in"] += 1
        now["max"] = max(now["max"], now["in"])
        try:
            return await real_open(self)
        finally:
            now["in"] -= 1

    monkeypatch.setattr(SshHost, "_open", counted)

    async def go() -> tuple[list[str], int]:
        async with HostPool(fleet.targets(), options=SshOptions(max_connecting=2)) as pool:
            names = [i.name for i in fleet.instances]
            results = await asyncio.gather(*(pool.ssh(n).run(f"echo {n}") for n in names))
            return [r.stdout.strip() for r in results], pool.connections_opened

    outs, opened = asyncio.run(go())
    assert outs == [i.name for i in fleet.instances]
    assert opened == 10
    assert now["max"] == 2


def test_fleet_ports_are_below_the_ephemeral_range(fleet: SshdFleet) -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [i.port for i in fleet.instances]
    assert len(set(ports)) == len(ports)
    assert all(10000 <= p < low for p in ports), ports


def test_aes_gcm_is_preferred_and_a_host_without_it_still_connects() -> None:
    """tminus offers AES-GCM first (one AEAD call per packet; asyncssh's chacha20-poly1305
    builds cipher contexts for every packet), so OpenSSH's default server picks it; a server
    that only allows chacha20-poly1305 still gets a connection, with that cipher.

    Mutation tried: ``encryption_algs=_ciphers()`` removed from ``SshHost._open``: the
    default server negotiates chacha20-poly1305 and the first assertion fails."""
    with SshdFleet(2) as own:
        strict = own["h2"]
        strict.stop()
        with strict.config.open("a") as fh:
            fh.write("Ciphers chacha20-poly1305@openssh.com\n")
        strict.start()

        async def go() -> list[tuple[str, str]]:
            async with HostPool(own.targets()) as pool:
                out = []
                for name in ("h1", "h2"):
                    res = await pool.ssh(name).run("echo up")
                    conn = await pool.ssh(name).connect()
                    out.append((res.stdout, str(conn.get_extra_info("send_cipher"))))
                return out

        assert asyncio.run(go()) == [
            ("up\n", "aes128-gcm@openssh.com"),
            ("up\n", "chacha20-poly1305@openssh.com"),
        ]
