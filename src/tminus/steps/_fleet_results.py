"""The per-host pieces of the fleet steps (leaf of :mod:`tminus.steps._fleet`): one host's
:class:`HostResult`, the :class:`History` of the deploy's host events (exclusions, earlier
results), hosts in natural order, and resolvers scoped to a host or batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tminus.hosts.base import Host
from tminus.hosts.fleet import History, natural_key
from tminus.plan.interpolate import Resolver
from tminus.plan.steps import FLEET_HOOK_VARIABLES, FLEET_HOST_VARIABLES

if TYPE_CHECKING:
    pass

__all__ = [
    "HOOK_VARIABLES",
    "HOST_VARIABLES",
    "TAIL",
    "History",
    "HostResult",
    "HostWork",
    "natural_key",
    "scoped",
    "tail",
]

HOST_VARIABLES = FLEET_HOST_VARIABLES
HOOK_VARIABLES = FLEET_HOOK_VARIABLES

#: Characters of stdout/stderr kept per host in events and artifacts.
TAIL = 4000


def tail(text: str, n: int = TAIL) -> str:
    return text[-n:] if len(text) > n else text


def scoped(resolver: Resolver, **values: str) -> Resolver:
    """The same resolver (secrets, masker, artifacts) with a few more variables."""
    return dataclasses.replace(resolver, variables={**resolver.variables, **values})


@dataclass
class HostResult:
    """What happened on one host in one step."""

    host: str
    status: str = "ok"  # ok | failed | skipped | excluded
    exit: int | None = None
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    attempts: int = 0
    duration: float = 0.0
    batch: int | None = None
    data: dict[str, Any] = field(default_factory=dict)  # kind-specific
    fatal: bool = False  # stop the whole step (host key problem, bad configuration)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def record(self) -> dict[str, Any]:
        """For the step's artifacts: compact, no output."""
        out: dict[str, Any] = {"status": self.status, "exit": self.exit}
        if self.error:
            out["error"] = self.error
        if self.attempts:
            out["attempts"] = self.attempts
        if self.batch is not None:
            out["batch"] = self.batch
        out.update(self.data)
        return out

    def event(self, key: str, hook: bool) -> dict[str, Any]:
        out = {
            "step": key,
            "host": self.host,
            "status": self.status,
            "exit": self.exit,
            "error": self.error,
            "stdout": tail(self.stdout),
            "stderr": tail(self.stderr),
            "attempts": self.attempts,
            "duration": round(self.duration, 3),
            "batch": self.batch,
            **self.data,
        }
        if hook:
            out["hook"] = True
        return out

    def summary(self) -> str:
        text = f"{self.host}: {self.status}"
        if self.exit not in (None, 0):
            text += f" (exit {self.exit})"
        if self.error:
            text += f": {self.error}"
        return text


#: One phase of the work on one host: (host name, host, resolver with ${host}, timeout).
HostWork = Callable[[str, Host, Resolver, float | None], Awaitable[HostResult]]
