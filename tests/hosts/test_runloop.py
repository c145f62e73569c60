"""Connections opened ahead by the preflight and taken by the deploy
(:mod:`tminus.runloop`), against real OpenSSH sshd: a parked connection is used by the
first host of the same target in the session's own loop, never by another loop, never once
it has dropped, and what no one took is closed when the session ends. Logins are counted in
sshd's own log.

Mutations tried (each made a test here fail, then was restored):

- ``Session.take`` without its loop check: the other loop gets the parked connection (and
  cannot use it) — ``test_another_loop_does_not_get_a_parked_connection``;
- ``Session.take`` without its ``is_closed`` check: the host gets a dropped connection and
  its command fails — ``test_a_parked_connection_that_dropped_is_not_handed_out``;
- ``session()`` not closing what is left: the untaken connection stays open —
  ``test_the_deploy_takes_a_parked_connection_and_the_rest_is_closed``.
"""

from __future__ import annotations

import asyncio

from tminus import runloop
from tminus.hosts.pool import HostPool
from tminus.testing.sshd import SshdFleet


def test_the_deploy_takes_a_parked_connection_and_the_rest_is_closed(fleet: SshdFleet) -> None:
    targets = fleet.targets()
    before = {n: fleet[n].accepted() for n in ("h1", "h2")}
    with runloop.session() as s:
        assert s is not None and runloop.current() is s
        ahead = HostPool(targets)

        async def preflight() -> list[str | None]:
            return list(await asyncio.gather(*(ahead.ssh(n).open_ahead(s) for n in ("h1", "h2"))))

        problems = s.run(preflight())
        assert problems == [None, None] and s.parked == 2
        left = s._parked[(ahead.ssh("h2").settings, ahead.ssh("h2").options)]

        async def deploy() -> int | None:
            async with HostPool(targets) as pool:
                res = await pool.ssh("h1").run("echo up")
                return res.exit_status if res.stdout == "up\n" else None

        assert s.run(deploy()) == 0
        assert s.parked == 1 and not left.conn.is_closed()
    assert runloop.current() is None
    assert left.conn.is_closed()  # closed unused when the session ended
    after = {n: fleet[n].accepted() for n in ("h1", "h2")}
    assert after == {"h1": before["h1"] + 1, "h2": before["h2"] + 1}  # one login each


async def _true_on(fleet: SshdFleet, name: str) -> int | None:
    """``true`` on host ``name`` through a pool of its own (the deploy's side)."""
    async with HostPool(fleet.targets()) as pool:
        return (await pool.ssh(name).run("true")).exit_status


def _opened_ahead(s: runloop.Session, fleet: SshdFleet, name: str) -> None:
    assert s.run(HostPool(fleet.targets()).ssh(name).open_ahead(s)) is None


def test_another_loop_does_not_get_a_parked_connection(fleet: SshdFleet) -> None:
    with runloop.session() as s:
        assert s is not None
        _opened_ahead(s, fleet, "h3")
        before = fleet["h3"].accepted()
        assert asyncio.run(_true_on(fleet, "h3")) == 0  # a loop of its own: connects itself
        assert fleet["h3"].accepted() == before + 1 and s.parked == 1


def test_a_parked_connection_that_dropped_is_not_handed_out(fleet: SshdFleet) -> None:
    with runloop.session() as s:
        assert s is not None
        _opened_ahead(s, fleet, "h4")
        parked = next(iter(s._parked.values()))

        async def drop() -> None:
            parked.conn.close()
            await parked.conn.wait_closed()

        s.run(drop())
        before = fleet["h4"].accepted()
        assert s.run(_true_on(fleet, "h4")) == 0
        assert fleet["h4"].accepted() == before + 1  # connected again


def test_no_session_inside_a_running_loop() -> None:
    async def inside() -> object:
        with runloop.session() as s:
            return s

    assert asyncio.run(inside()) is None
    with runloop.session() as outer, runloop.session() as inner:
        assert outer is not None and inner is None and runloop.current() is outer
