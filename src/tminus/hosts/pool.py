"""A pool of hosts: one :class:`SshHost` (so one connection) per host name, created on first
use, shared by every command on that host, all closed together.

    async with HostPool(inventory.hosts, options=SshOptions(accept_new_host_keys=False)) as pool:
        results = await asyncio.gather(*(pool.ssh(h).run("uptime") for h in pool.names("web")))
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tminus.hosts.base import Host
from tminus.hosts.local import LocalHost
from tminus.hosts.ssh import SshHost, SshOptions, SshSettings

if TYPE_CHECKING:
    from tminus.hosts.inventory import ResolvedHost
    from tminus.plan.targets import Host as TargetHost

__all__ = ["HostPool"]


class HostPool:
    """Owns the connections to a set of hosts. ``targets`` maps names to plan ``Host`` models
    or resolved inventory hosts; a name not in it is reached at that name, port 22."""

    def __init__(
        self,
        targets: Mapping[str, TargetHost | ResolvedHost] | None = None,
        *,
        options: SshOptions | None = None,
    ) -> None:
        self.targets = dict(targets or {})
        self.options = options or SshOptions()
        self._ssh: dict[str, SshHost] = {}
        self._local: dict[str, LocalHost] = {}
        self._closed = False
        #: Handshakes in progress at once over the pool (SshOptions.max_connecting).
        self._connecting = asyncio.Semaphore(self.options.max_connecting)

    def _target(self, name: str) -> TargetHost | None:
        t = self.targets.get(name)
        if t is None:
            return None
        from tminus.hosts.inventory import ResolvedHost

        return t.target() if isinstance(t, ResolvedHost) else t

    def ssh(self, name: str) -> SshHost:
        """The SSH host ``name`` (the same object, so the same connection, every time)."""
        if self._closed:
            raise RuntimeError("the host pool is closed")
        host = self._ssh.get(name)
        if host is None:
            settings = SshSettings.from_target(name, self._target(name))
            host = self._ssh[name] = SshHost(settings, self.options, self._connecting)
        return host

    def host(self, name: str) -> Host:
        """``name`` as a :class:`Host`: the local machine for ``local: true`` hosts (and an
        undeclared ``localhost``), otherwise SSH."""
        t = self._target(name)
        if (t is not None and t.local) or (t is None and name == "localhost"):
            local = self._local.get(name)
            if local is None:
                local = self._local[name] = LocalHost()
                local.name = name
            return local
        return self.ssh(name)

    @property
    def connections_opened(self) -> int:
        return sum(h.connections_opened for h in self._ssh.values())

    async def close(self) -> None:
        self._closed = True
        hosts, self._ssh = list(self._ssh.values()), {}
        await asyncio.gather(*(h.close() for h in hosts), return_exceptions=True)

    async def __aenter__(self) -> HostPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
