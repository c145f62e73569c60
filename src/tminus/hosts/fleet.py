"""The fleet of one deploy: the plan's hosts and groups (with its inventory, if any) resolved
once, and one :class:`HostPool` (so one connection per host) shared by every step of the
deploy and closed when the runner stops. Steps reach it as ``ctx.services.fleet``;
:class:`tminus.steps.base.DeployFleet` builds it on first use. :class:`History` is what the
deploy's event log says about its hosts (exclusions, each step's results per host): the fleet
steps and ``resume --retry-failed-hosts`` read it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tminus.hosts.base import Host
from tminus.hosts.inventory import Inventory, resolve
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan

if TYPE_CHECKING:  # asyncssh is imported only when a plan reaches a host
    from tminus.hosts.pool import HostPool

__all__ = ["Fleet", "History", "natural_key"]


class Fleet:
    """Resolved hosts and their connections, opened on first use."""

    def __init__(
        self,
        plan: Plan,
        resolver: Resolver,
        events: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.plan = plan
        self.resolver = resolver
        #: The deploy's event log (the engine sets it): fleet steps read host exclusions and
        #: earlier per-host results from it, so a resume knows which hosts are done.
        self.events = events
        self._inventory: Inventory | None = None
        self._pool: HostPool | None = None

    @property
    def inventory(self) -> Inventory:
        if self._inventory is None:
            t = self.plan.targets
            path: Path | None = None
            if t.inventory:
                path = Path(self.resolver.resolve(t.inventory))
                if not path.is_absolute():
                    path = self.resolver.base_dir / path
            self._inventory = resolve(path, t)
        return self._inventory

    @property
    def pool(self) -> HostPool:
        if self._pool is None:
            from tminus.hosts.pool import HostPool
            from tminus.hosts.ssh import SshOptions

            d = self.plan.targets.ssh
            known = self.resolver.resolve(d.known_hosts) if d.known_hosts else None
            options = SshOptions(
                known_hosts=known,
                accept_new_host_keys=d.accept_new_host_keys,
                connect_timeout=d.connect_timeout.total_seconds(),
                keepalive_interval=d.keepalive_interval.total_seconds(),
            )
            self._pool = HostPool(self.inventory.hosts, options=options)
        return self._pool

    @property
    def forks(self) -> int:
        return self.plan.targets.ssh.forks

    def names(self, pattern: str) -> list[str]:
        """Host names of a group or a single host (``localhost`` is always known)."""
        if pattern == "localhost" and "localhost" not in self.inventory.hosts:
            return ["localhost"]
        return [h.name for h in self.inventory.select(pattern)]

    def host(self, name: str) -> Host:
        return self.pool.host(name)

    def address(self, name: str) -> str:
        """The address a host is reached at (its name if it has none)."""
        h = self.inventory.hosts.get(name)
        return h.address if h is not None else name

    def is_local(self, name: str) -> bool:
        h = self.inventory.hosts.get(name)
        return h.local if h is not None else name == "localhost"

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def natural_key(name: str) -> list[Any]:
    """``h2`` before ``h10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


@dataclass
class History:
    """What the deploy's event log says about hosts: exclusions and earlier results."""

    excluded: dict[str, str] = field(default_factory=dict)  # host -> who excluded it
    # (step key, host) -> the latest host.result data of that step (hooks left out)
    latest: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    step_state: dict[str, str] = field(default_factory=dict)  # step key -> its latest state
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, fleet: Fleet | None) -> History:
        events = fleet.events() if fleet is not None and fleet.events is not None else []
        h = cls(events=events)
        for e in events:
            data = e.get("data") or {}
            if e["type"] == "host.excluded" and data.get("host"):
                h.excluded[str(data["host"])] = str(data.get("by") or "the operator")
            elif e["type"] == "host.result" and not data.get("hook") and data.get("host"):
                h.latest[(str(data.get("step")), str(data["host"]))] = data
            elif e["type"].startswith("step.") and e.get("key"):
                h.step_state[str(e["key"])] = e["type"][5:]
        return h

    def ok_in(self, key: str) -> set[str]:
        return {h for (k, h), d in self.latest.items() if k == key and d.get("status") == "ok"}

    def failed_before(self, key: str) -> dict[str, str]:
        """Hosts that failed an earlier forward step which succeeded all the same (its
        max_fail tolerated them) -> that step. Such hosts are out of the rollout. The failed
        hosts of a step that failed (then skipped, ignored or retried) are not."""
        out: dict[str, str] = {}
        for (k, h), d in self.latest.items():
            if (
                k != key
                and d.get("status") == "failed"
                and self.step_state.get(k) in ("succeeded", "rolled_back")
                and not k.startswith("rollback/")
            ):
                out.setdefault(h, k)
        return out
