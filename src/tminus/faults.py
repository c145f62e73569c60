"""Fault injection for crash tests: the runner kills itself (SIGKILL) at a chosen durable point.

Two kinds of crash point, counted separately from the start of the process:

- ``TMINUS_CRASH_AFTER_COMMITS=N``: right after the runner's N-th commit to the store (the
  record is written; what comes after it is not);
- ``TMINUS_CRASH_AFTER_SPAWNS=N``: right after the N-th child process group a step started is
  recorded in the store: the child is running, its runner is gone (the orphan case: whoever
  resumes must kill it before anything else runs);
- ``TMINUS_CRASH_AFTER_EFFECTS=N``: right after the N-th action's effect is done and before its
  result is recorded (a forward step, a rollback action, a compensation or an operation's step
  has returned; its end is not in the store). This is the hard case for a durable engine: the
  world changed and the record does not say so.

Heartbeats and process-group records are not counted as commits (they are written on a timer
or by the work itself, so counting them would make the points depend on timing).

``TMINUS_CRASH_REPORT=PATH``: before killing itself the process appends one JSON line to PATH,
``{"point": …, "n": N, "inflight": KEY|null, "effect_done": bool, "effect_ok": bool|null}``:
what the crash test knows about the crash it caused: which action was in flight, whether its
effect had finished, and whether it had succeeded. It plays the part of the operator who
looked at the system, so the test never has to read the evidence it later checks (the ledger
of effects) to decide how to answer a pause.

``TMINUS_FAULT_COUNTS=PATH``: at exit, write how many points of each kind the process passed
(``{"commits": …, "spawns": …, "effects": …}``), so a campaign knows its range.

Nothing here changes behaviour unless one of the variables is set.
"""

from __future__ import annotations

import atexit
import json
import os
import signal

__all__ = ["after_commit", "after_spawn", "counts", "effect_done", "effect_started", "recorded"]

_state: dict[str, object] = {
    "commits": 0,
    "effects": 0,
    "spawns": 0,
    "inflight": None,
    "done": False,
    "ok": None,
}


def _limit(name: str) -> int:
    return int(os.environ.get(name, "0") or 0)


def _crash(point: str, n: int) -> None:
    path = os.environ.get("TMINUS_CRASH_REPORT")
    if path:
        line = {
            "point": point,
            "n": n,
            "inflight": _state["inflight"],
            "effect_done": bool(_state["done"]),
            "effect_ok": _state["ok"],
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
    limit = _limit("TMINUS_CRASH_AFTER_COMMITS")
    if limit and n >= limit:
        _crash("commit", n)


def after_spawn() -> None:
    """Called by the engine after it recorded a child process group of the action in flight."""
    n = _count("spawns")
    limit = _limit("TMINUS_CRASH_AFTER_SPAWNS")
    if limit and n >= limit:
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
    limit = _limit("TMINUS_CRASH_AFTER_EFFECTS")
    if limit and n >= limit:
        _crash("effect", n)


def recorded(key: str) -> None:
    """The action ``key``'s end is recorded: nothing is in flight."""
    if _state["inflight"] == key:
        _state["inflight"] = None
        _state["done"] = False


def counts() -> dict[str, int]:
    """How many points of each kind this process has passed so far."""
    return {k: int(str(_state[k])) for k in ("commits", "spawns", "effects")}


def _write_counts() -> None:
    path = os.environ.get("TMINUS_FAULT_COUNTS")
    if path:
        with open(path, "w") as fh:
            json.dump(counts(), fh)


atexit.register(_write_counts)
