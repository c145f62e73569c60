"""Is a deploy's runner alive? The rule used by `status`, `list`, `resume`, `abort` and
``--force-unlock``.

A deploy row names its runner: ``runner_pid``, ``host``, ``runner_token`` (the start time of
that pid, field 22 of ``/proc/PID/stat``) and ``heartbeat_at`` (updated by the runner's engine
every :data:`HEARTBEAT_S` seconds). Only a deploy in *pending*, *running* or *rolling_back*
has a runner; in any other state nobody drives it.

- Runner on this host: it is dead when its pid is gone, is a zombie, or now belongs to another
  process (its start time differs from the token recorded). The heartbeat is not needed.
- Runner on another host: we cannot ask its kernel, so it is dead when its heartbeat (or, for a
  row without one, its last update) is older than :data:`HEARTBEAT_TIMEOUT_S`.

A pending, running or rolling-back deploy whose runner is dead is shown as :data:`CRASHED`
(derived at read time, like Prefect's *Crashed*; the stored state is left as it is, so
``resume`` knows where it was).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tminus.clock import now
from tminus.procfs import pid_token, proc_stat

__all__ = [
    "ACTIVE_STATES",
    "CRASHED",
    "HEARTBEAT_S",
    "HEARTBEAT_TIMEOUT_S",
    "Liveness",
    "describe_holder",
    "pid_token",
    "runner_liveness",
    "shown_state",
]

#: How often the runner's engine writes ``deploys.heartbeat_at`` (seconds).
HEARTBEAT_S = 2.0
#: A runner on another host whose heartbeat is older than this is taken for dead (seconds):
#: ten missed heartbeats, room for a slow store, never for a live runner; under the 30 s in
#: which `tminus serve` must take over a dead server's deploys on another host.
HEARTBEAT_TIMEOUT_S = 20.0
#: The state shown for a running or rolling-back deploy whose runner is dead.
CRASHED = "crashed"
#: The states in which a runner process drives the deploy.
ACTIVE_STATES = frozenset({"pending", "running", "rolling_back"})
_SHOWN_CRASHED = frozenset({"pending", "running", "rolling_back"})


@dataclass(frozen=True)
class Liveness:
    """What is known of a deploy's runner."""

    alive: bool
    #: Why we believe so, for messages: "pid 4242 is gone", "heartbeat 0.8 s ago", …
    why: str
    pid: int | None
    host: str | None
    heartbeat_at: datetime | None
    #: Seconds since the last heartbeat (None without one).
    heartbeat_age_s: float | None
    #: False when no runner drives the deploy in its state (paused, ended, …).
    has_runner: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "host": self.host,
            "heartbeat_at": self.heartbeat_at,
            "heartbeat_age_s": None
            if self.heartbeat_age_s is None
            else round(self.heartbeat_age_s, 1),
            "alive": self.alive,
            "why": self.why,
        }


def runner_liveness(d: dict[str, Any], *, at: datetime | None = None) -> Liveness:
    """Apply the rule to a deploy row (see the module docstring). The current process is
    never "another live runner": a caller asks about someone else."""
    pid = d.get("runner_pid")
    host = d.get("host")
    hb = d.get("heartbeat_at")
    t = at or now()
    ref = hb or d.get("updated_at")
    age = (t - ref).total_seconds() if ref is not None else None
    hb_age = (t - hb).total_seconds() if hb is not None else None

    def result(alive: bool, why: str, has_runner: bool = True) -> Liveness:
        return Liveness(alive, why, pid, host, hb, hb_age, has_runner)

    if d.get("state") not in ACTIVE_STATES:
        return result(False, f"no runner drives a {d.get('state')} deploy", has_runner=False)
    if not pid:
        return result(False, "no runner recorded")
    if host == socket.gethostname():
        if pid == os.getpid():
            return result(False, "this process")
        fields = proc_stat(pid)
        if fields is None:
            return result(False, f"pid {pid} is gone")
        if fields[0] in ("Z", "X"):
            return result(False, f"pid {pid} has exited")
        token = d.get("runner_token")
        if token and fields[19] != token:
            return result(False, f"pid {pid} is now another process")
        return result(True, f"pid {pid} is running on this host")
    if age is None:
        return result(True, "no heartbeat recorded")
    what = "heartbeat" if hb is not None else "last update"
    if age > HEARTBEAT_TIMEOUT_S:
        return result(
            False, f"{what} {age:.0f} s ago on {host}, older than {HEARTBEAT_TIMEOUT_S:g} s"
        )
    return result(True, f"{what} {age:.1f} s ago on {host}")


def shown_state(d: dict[str, Any], live: Liveness | None = None) -> str:
    """The state to show: the stored one, or :data:`CRASHED` for a pending, running or
    rolling-back deploy whose runner is dead."""
    state = str(d["state"])
    if state in _SHOWN_CRASHED and not (live or runner_liveness(d)).alive:
        return CRASHED
    return state


def describe_holder(d: dict[str, Any], live: Liveness) -> str:
    """ "deploy p-1 of alice, pid 4242 on build-7, heartbeat 0.8 s ago" for lock messages."""
    hb = f"heartbeat {live.heartbeat_age_s:.1f} s ago" if live.heartbeat_age_s is not None else ""
    return (
        f"deploy {d['id']} of {d['started_by']}, pid {live.pid} on {live.host}"
        + (f", {hb}" if hb else "")
        + f" ({live.why})"
    )
