"""What interrupts a forward run from outside: the plan's rollback triggers, watched while
the phases they cover run, and the operator's abort request, read at step boundaries and by
the step supervisor; the wake (``SIGUSR1``, :mod:`tminus.engine.wake`) that makes the runner
read an abort request at once instead of at its next poll."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from tminus.clock import now
from tminus.engine import wake
from tminus.engine.attempt import ABORT_POLL_S
from tminus.engine.rollback import run_rollback
from tminus.engine.specs import _jsonable
from tminus.states import DeployState

if TYPE_CHECKING:
    from tminus.engine.engine import Engine
    from tminus.engine.program import Node

__all__ = [
    "abort_requested",
    "abort_wants_rollback",
    "catch_wake",
    "on_trigger",
    "release_wake",
    "watch_triggers",
]


async def watch_triggers(engine: Engine) -> None:
    """Evaluate the plan's rollback triggers (those with a check) while the phases they
    cover run, each every ``interval``. A failed check fires it: ``notify`` is recorded
    and notified; ``rollback`` and ``pause`` are handed to the run loop (the running step
    is stopped for a rollback, finishes for a pause). No data or a failing source never
    fires a trigger: it is recorded as ``trigger.no_verdict``."""
    triggers = [t for t in engine.plan.rollback_triggers if t.check is not None]
    if not triggers:
        return
    covers = {
        id(t): {engine.plan.phase_index(p) for p in t.phases} if t.phases else None
        for t in triggers
    }
    phase_seen = -1
    due: dict[int, float] = {}
    notified: set[int] = set()
    while engine._fired is None:
        await asyncio.sleep(0.1)
        if engine._phase_now != phase_seen:  # a new phase: each trigger waits one interval
            phase_seen = engine._phase_now
            t0 = time.monotonic()
            due = {id(t): t0 + t.interval.total_seconds() for t in triggers}
        for t in triggers:
            cover = covers[id(t)]
            if phase_seen < 0 or (cover is not None and phase_seen not in cover):
                continue
            if time.monotonic() < due[id(t)]:
                continue
            due[id(t)] = time.monotonic() + t.interval.total_seconds()
            assert t.check is not None
            result = await engine.run_check(t.check)
            data = {"trigger": t.name, "status": result.status, "action": t.action}
            if result.status in ("inconclusive", "error"):
                engine._event("trigger.no_verdict", f"{t.name}: {result.message}", data)
                continue
            if result.passed:
                continue
            msg = f"rollback trigger '{t.name}' fired: {result.message}"
            engine._event("trigger.fired", msg, {**data, "value": _jsonable(result.value)})
            engine.reporter.line(msg)
            if t.action == "notify":
                if id(t) not in notified:
                    notified.add(id(t))
                    engine._notify_rules("failure", f"{engine.deploy_id}: {msg}")
                continue
            engine._fired = (t, result)
            return


async def on_trigger(engine: Engine, node: Node) -> DeployState | None:
    """Act on a trigger that fired: roll back (the trigger is the recorded cause) or
    pause. None when none has fired."""
    if engine._fired is None:
        return None
    t, result = engine._fired
    reason = f"rollback trigger '{t.name}' fired: {result.message}"
    if t.action == "pause":
        engine._fired = None
        return engine._pause(node, reason)
    engine.store.set_deploy(engine.deploy_id, fault_at=now())
    phase = node.phase if node.phase >= 0 else engine._phase_now
    return await run_rollback(engine, reason=reason, failed_phase=phase if phase >= 0 else None)


def abort_requested(engine: Engine) -> bool:
    """Has an operator asked to abort? Read at most every ABORT_POLL_S seconds, so a plan
    of many short steps does not pay a query per step; a step boundary after that reads
    it, so an abort takes effect within ABORT_POLL_S plus the running step. A wake
    (:func:`catch_wake`) makes the next call read it at once."""
    t = time.monotonic()
    if t - engine._abort_checked < ABORT_POLL_S:
        return False
    engine._abort_checked = t
    return engine.store.abort_requested(engine.deploy_id)


def pause_requested(engine: Engine) -> str | None:
    """Who asked to pause before the next step (the API's pause), read at most every
    ABORT_POLL_S seconds like the abort, and at once after a wake (the API wakes the runner
    after recording the request; the supervisor does not stop the step for it: the running
    step finishes first); None if nobody did."""
    t = time.monotonic()
    if t - engine._pause_checked < ABORT_POLL_S:
        return None
    engine._pause_checked = t
    return engine.store.pause_requested(engine.deploy_id)


def abort_wants_rollback(engine: Engine) -> bool:
    """Did the newest abort request ask for a rollback (``tminus abort --rollback``)?"""
    found = engine.store.events(engine.deploy_id, types=("deploy.abort_requested",))
    return bool(found and (found[-1].get("data") or {}).get("rollback"))


# --- the wake ---------------------------------------------------------------------------------


def catch_wake(engine: Engine, loop: asyncio.AbstractEventLoop) -> bool:
    """While the engine runs as the deploy's runner, SIGUSR1 (sent by ``tminus abort`` or the
    API right after they recorded an abort request, :func:`tminus.engine.wake.wake_runner`)
    makes the next :func:`abort_requested` read the store and wakes the step supervisor
    (:func:`tminus.engine.attempt.supervise`), which stops the running step at once: a
    ``wait``, a canary's hold, a command. False when no handler could be installed (not
    the main thread): then nobody sends the signal (it is sent only to a process that
    catches it) and the abort is noticed at the next poll, as on another host."""
    return wake.catch(loop, lambda: _on_wake(engine))


def _on_wake(engine: Engine) -> None:
    engine._abort_checked = float("-inf")
    engine._pause_checked = float("-inf")  # a pause request wakes too (the step goes on)
    if engine.wake is not None:
        engine.wake.set()


def release_wake(loop: asyncio.AbstractEventLoop) -> None:
    """The run is over: :func:`tminus.engine.wake.release`."""
    wake.release(loop)
