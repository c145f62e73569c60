"""The per-host pieces of the fleet steps (leaf of :mod:`tminus.steps._fleet`): one host's
:class:`HostResult`, the :class:`History` of the deploy's host events (exclusions, earlier
results), hosts in natural order, and resolvers scoped to a host or batch."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tminus.hosts.base import Host
from tminus.plan.interpolate import ResolveError, Resolver
from tminus.plan.steps import FLEET_HOOK_VARIABLES, FLEET_HOST_VARIABLES

if TYPE_CHECKING:
    from tminus.hosts.fleet import Fleet

__all__ = [
    "HOOK_VARIABLES",
    "HOST_VARIABLES",
    "TAIL",
    "History",
    "HostResult",
    "HostWork",
    "natural_key",
    "placeholder",
    "scoped",
    "shown",
    "tail",
]

HOST_VARIABLES = FLEET_HOST_VARIABLES
HOOK_VARIABLES = FLEET_HOOK_VARIABLES

#: Characters of stdout/stderr kept per host in events and artifacts.
TAIL = 4000


def tail(text: str, n: int = TAIL) -> str:
    return text[-n:] if len(text) > n else text


def natural_key(name: str) -> list[Any]:
    """``h2`` before ``h10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def scoped(resolver: Resolver, **values: str) -> Resolver:
    """The same resolver (secrets, masker, artifacts) with a few more variables."""
    return dataclasses.replace(resolver, variables={**resolver.variables, **values})


def placeholder(resolver: Resolver) -> Resolver:
    """For describe() and dry runs: per-host and per-batch variables shown as placeholders."""
    return scoped(resolver, **{v: f"<{v}>" for v in (*HOST_VARIABLES, *HOOK_VARIABLES)})


def shown(resolver: Resolver, *, shell: bool = False) -> Callable[[str], str]:
    """For describe(): resolve with placeholders; a value not available yet (an artifact)
    is shown as written rather than failing the description."""
    r = placeholder(resolver)

    def show(text: str) -> str:
        try:
            return r.resolve_shell(text) if shell else r.resolve(text)
        except ResolveError:
            return text

    return show


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
