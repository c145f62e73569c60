"""Fault points for crash tests: the runner kills itself (SIGKILL) at a chosen durable point.

Production code passes the points; nothing happens unless a test installed a
:class:`FaultPlan` with :func:`install` (through :mod:`tminus.testing.seam`, the one testing
entry point; nothing here reads the environment). Three kinds of point, counted separately from
the start of the process:

- ``after_commits=N``: right after the runner's N-th commit to the store (the record is
  written; what comes after it is not);
- ``after_spawns=N``: right after the N-th child process group a step started is recorded in
  the store: the child is running, its runner is gone (the orphan case: whoever resumes must
  kill it before anything else runs);
- ``after_effects=N``: right after the N-th action's effect is done and before its result is
  recorded (a forward step, a rollback action, a compensation or an operation's step has
  returned; its end is not in the store). This is the hard case for a durable engine: the
  world changed and the record does not say so.

Heartbeats and process-group records are not counted as commits (they are written on a timer
or by the work itself, so counting them would make the points depend on timing).

``report=PATH``: before killing itself the process appends one JSON line to PATH,
``{"point": …, "n": N, "inflight": KEY|null, "effect_done": bool, "effect_ok": bool|null,
"counts": {"commits": …, "spawns": …, "effects": …}}``: what the crash test knows about the
crash it caused: which action was in flight, whether its effect had finished, whether it had
succeeded, and how many points of each kind the process had passed (a test finds the commit
right after an effect from a crash at that effect: the next counted commit is its record).
It plays the part of the operator who looked at the system, so the test never has to read
the evidence it later checks (the ledger of effects) to decide how to answer a pause.

``counts=PATH``: at exit, write how many points of each kind the process passed
(``{"commits": …, "spawns": …, "effects": …}``), so a campaign knows its range.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FaultPlan",
    "after_commit",
    "after_spawn",
    "counts",
    "effect_done",
    "effect_started",
    "install",
    "recorded",
]


@dataclass(frozen=True)
class FaultPlan:
    """Where this process crashes (0: never at that kind) and what it writes."""

    after_commits: int = 0
    after_spawns: int = 0
    after_effects: int = 0
    report: Path | None = None
    counts: Path | None = None


_plan: FaultPlan | None = None
_state: dict[str, object] = {
    "commits": 0,
    "effects": 0,
    "spawns": 0,
    "inflight": None,
    "done": False,
    "ok": None,
}


def install(plan: FaultPlan | None) -> None:
    """Arm the fault points of this process (``None`` disarms them)."""
    global _plan
    _plan = plan
    if plan is not None and plan.counts is not None:
        atexit.register(_write_counts, plan.counts)


def _crash(point: str, n: int) -> None:
    path = _plan.report if _plan else None
    if path:
        line = {
            "point": point,
            "n": n,
            "inflight": _state["inflight"],
            "effect_done": bool(_state["done"]),
            "effect_ok": _state["ok"],
            "counts": counts(),
        }
        with open(path, "a") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def _count(name: str) -> int:
    n = int(str(_state[name])) + 1
    _state[name] = n
    return n


def after_commit() -> None:
    """Called by the store after each counted commit."""
    n = _count("commits")
    if _plan and _plan.after_commits and n >= _plan.after_commits:
        _crash("commit", n)


def after_spawn() -> None:
    """Called by the engine after it recorded a child process group of the action in flight."""
    n = _count("spawns")
    if _plan and _plan.after_spawns and n >= _plan.after_spawns:
        _crash("spawn", n)


def effect_started(key: str) -> None:
    """The engine is about to run the action ``key`` (its start is recorded)."""
    _state["inflight"] = key
    _state["done"] = False
    _state["ok"] = None


def effect_done(key: str, ok: bool) -> None:
    """The action ``key`` has returned (``ok``: it succeeded); its result is not recorded yet."""
    _state["inflight"] = key
    _state["done"] = True
    _state["ok"] = ok
    n = _count("effects")
    if _plan and _plan.after_effects and n >= _plan.after_effects:
        _crash("effect", n)


def recorded(key: str) -> None:
    """The action ``key``'s end is recorded: nothing is in flight."""
    if _state["inflight"] == key:
        _state["inflight"] = None
        _state["done"] = False


def counts() -> dict[str, int]:
    """How many points of each kind this process has passed so far."""
    return {k: int(str(_state[k])) for k in ("commits", "spawns", "effects")}


def _write_counts(path: Path) -> None:
    with open(path, "w") as fh:
        json.dump(counts(), fh)
