"""The preflight of the fleet steps: hosts whose SSH key is unknown, changed or revoked are
refused before the deploy starts (:func:`host_key_problems`), each host checked once per plan:
inside ``tminus run``'s session (:mod:`tminus.runloop`) by opening the connection the deploy
then uses, elsewhere with a key exchange alone."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from tminus import runloop
from tminus.errors import TminusError
from tminus.plan.interpolate import Resolver

if TYPE_CHECKING:
    from tminus.plan.model import Plan

__all__ = ["host_key_problems"]


# --- preflight: unknown host keys fail before anything runs ---------------------------------


class _KeyCheck:
    """Host keys of one plan's hosts, each host checked once (the runner calls the preflight
    for every step); the hosts of a step are checked concurrently, as many key exchanges at
    once as the pool's handshakes (``SshOptions.max_connecting``)."""

    def __init__(self, plan: Plan, resolver: Resolver) -> None:
        from tminus.hosts.fleet import Fleet

        self.plan = plan
        self.fleet = Fleet(plan, resolver)
        self.hosts: dict[str, str | None] = {}

    def problems(self, names: list[str]) -> list[str]:
        todo = [n for n in dict.fromkeys(names) if n not in self.hosts]
        if todo:
            session = runloop.current()
            if session is not None:
                self.hosts.update(session.run(self._open_all(todo, session)))
            else:
                self.hosts.update(_run_sync(self._check_all(todo)))
        return [p for p in (self.hosts.get(n) for n in names) if p]

    async def _open_all(self, names: list[str], session: runloop.Session) -> dict[str, str | None]:
        """In a run's session: each host's connection opened ahead and parked for the deploy
        (the pool's ``max_connecting`` paces the handshakes)."""

        async def one(name: str) -> tuple[str, str | None]:
            try:
                return name, await self.fleet.pool.ssh(name).open_ahead(session)
            except TminusError as exc:  # an unreadable known_hosts
                return name, str(exc)

        return dict(await asyncio.gather(*(one(n) for n in names)))

    async def _check_all(self, names: list[str]) -> dict[str, str | None]:
        gate = asyncio.Semaphore(self.fleet.pool.options.max_connecting)

        async def one(name: str) -> tuple[str, str | None]:
            async with gate:
                try:
                    return name, await self.fleet.pool.ssh(name).check_host_key()
                except TminusError as exc:  # an unreadable known_hosts
                    return name, str(exc)

        return dict(await asyncio.gather(*(one(n) for n in names)))


def _run_sync(coro: Any) -> Any:
    """Run ``coro`` to completion from synchronous code, inside a running loop or not."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


_key_checks: dict[int, _KeyCheck] = {}


def host_key_problems(step: Any, plan: Plan, resolver: Resolver) -> list[str]:
    """Hosts of ``step.on`` whose key is unknown (unless the plan accepts new keys), CHANGED
    or revoked: refused before the deploy starts, so `tminus run` exits 2 having changed
    nothing. Each host's key is fetched with a key exchange alone (no login); a host that
    cannot be reached is left to the run (a failed host)."""
    check = _key_checks.get(id(plan))
    if check is None or check.plan is not plan:
        _key_checks.clear()
        check = _key_checks[id(plan)] = _KeyCheck(plan, resolver)
    try:
        names = check.fleet.names(step.on)
    except TminusError:
        return []  # `tminus check` reports unknown names
    return check.problems([n for n in names if not check.fleet.is_local(n)])
