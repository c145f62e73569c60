"""One attempt after another of a step: its undo registered first, its retries, each attempt
supervised as a task (time limit, the operator's abort, a rollback trigger) and its work
stopped for real when it must stop; what it did recorded (state, output, artifacts, the
compensation it armed, the maintenance span it opened or closed)."""

from __future__ import annotations

import asyncio
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from tminus import faults, work
from tminus.engine.specs import _rerun_safe, _span_of, step_spec
from tminus.plan.steps import StepBase
from tminus.plan.values import format_duration
from tminus.states import StepState
from tminus.steps.base import StepOutcome
from tminus.steps.registry import kind_of

if TYPE_CHECKING:
    from tminus.engine.engine import Engine

__all__ = ["ABORT_POLL_S", "STOP_EXTRA_S", "execute", "supervise"]

#: How often (seconds) the run loop looks for an operator's abort request.
ABORT_POLL_S = 0.5

#: How long (seconds), beyond the kill grace, the engine waits for a cancelled step's work to
#: stop (its processes killed, its statements cancelled) before it gives up and pauses the
#: deploy instead of rolling back over work that may still be running. Longer than
#: :func:`tminus.work.in_thread`'s own bound, so that its verdict comes first.
STOP_EXTRA_S = 15.0


async def execute(
    engine: Engine,
    step: StepBase,
    key: str,
    phase: int,
    row: dict[str, Any] | None,
    *,
    rolling_back: bool = False,
) -> StepOutcome:
    """Run one step with its retries, registering its undo first. A rollback action
    registers no undo of its own, and its artifacts never replace the forward step's."""
    kind = kind_of(step)
    ctx = engine._ctx(key, phase)
    undo: list[StepBase] = [] if rolling_back else list(step.undo)
    builtin = None if rolling_back else kind.compensation(step, ctx)
    if builtin is not None:
        undo.append(builtin.step)
    if undo:
        engine.store.arm_compensation(
            engine.deploy_id,
            phase=phase,
            source_key=key,
            title=f"undo: {engine._title(step)}",
            spec={"steps": [step_spec(u) for u in undo]},
            partial_ok=builtin is not None and builtin.partial_ok,
        )
    attempts_before = row["attempts"] if row else 0
    engine._current_key = key
    if not engine.reporter.quiet:  # (a description costs more than a no-op step's record)
        engine.reporter.step(
            engine._title(step), engine._mask(kind.describe(step, engine.resolver))
        )
    # Per-host kinds (the fleet kinds) apply timeout and retries to each host.
    retries = None if kind.per_host else step.retries
    total = retries.attempts if retries else 1
    delay = retries.delay.total_seconds() if retries else 0.0
    outcome = StepOutcome(False, error="not run")
    # What must be on disk when (docs/architecture.md, "What is durable when"): the start of
    # an action that may not run twice is flushed before its effect; the start of one that
    # may, and every action's end, are committed without waiting for the flush (PostgreSQL):
    # kept if the runner dies, and a database crash that loses them leaves the action in
    # flight, which a resume already handles (re-run if it may, else pause).
    flush_start = not _rerun_safe(step)
    for attempt in range(1, total + 1):
        engine.store.step_started(
            engine.deploy_id,
            key,
            title=engine._title(step),
            kind=kind.kind,
            step_id=None if rolling_back else step.id,
            attempts=attempts_before + attempt,
            new=row is None and attempt == 1,
            flush=flush_start,
        )
        # Some kinds apply their own timeout (to their command, to each host).
        own_timeout = kind.own_timeout or kind.per_host
        limit = None if own_timeout or step.timeout is None else step.timeout
        faults.effect_started(key)
        outcome = await supervise(
            engine, kind.execute(step, ctx), step, limit, watch_abort=not rolling_back
        )
        if engine._interrupted is not None:
            break
        faults.effect_done(key, outcome.ok)
        if outcome.ok or outcome.waiting or outcome.pause or attempt == total:
            break
        engine.reporter.result(
            False, f"{outcome.error} — retry {attempt}/{total - 1} in {delay:g}s"
        )
        engine.store.step_finished(  # still in flight: the step has attempts left
            engine.deploy_id,
            key,
            state="running",
            error=outcome.error,
            output=engine._mask(outcome.output)[-20000:],
            flush=False,
        )
        await asyncio.sleep(delay)
        if retries is not None:
            delay = min(delay * retries.backoff, retries.max_delay.total_seconds())
    if engine._interrupted == "unconfirmed":
        # The work may still be running: the step stays in flight, and the operator decides.
        engine.store.step_finished(
            engine.deploy_id, key, state="running", error=outcome.error, flush=False
        )
        engine.reporter.result(False, outcome.error or "")
        return outcome
    if outcome.waiting:
        engine.store.step_finished(
            engine.deploy_id, key, state="waiting", error=outcome.waiting, flush=False
        )
        faults.recorded(key)
        return outcome
    if outcome.pause:  # "waiting" so that a plain `tminus resume` runs the step again
        engine.store.step_finished(
            engine.deploy_id,
            key,
            state="waiting",
            error=outcome.pause,
            output=engine._mask(outcome.output)[-20000:],
            artifacts=engine.resolver.masker.mask_data(outcome.artifacts),
            flush=False,
        )
        faults.recorded(key)
        engine.reporter.result(False, outcome.pause)
        return outcome
    state = StepState.SUCCEEDED if outcome.ok else StepState.FAILED
    comp_state: str | None = None
    if undo:
        partial = builtin is not None and builtin.partial_ok
        comp_state = "pending" if (outcome.ok or partial) else "void"
    engine.store.step_finished(
        engine.deploy_id,
        key,
        state=state.value,
        output=engine._mask(outcome.output)[-20000:],
        error=outcome.error,
        artifacts=engine.resolver.masker.mask_data(outcome.artifacts),
        compensation_state=comp_state,
        flush=False,
    )
    faults.recorded(key)
    if outcome.ok and step.id:
        engine._artifacts_cache = None
    span = kind.maintenance_span(step)
    if span is not None and outcome.ok:
        if span == "open":
            engine.store.maintenance_on(engine.deploy_id, phase)
        else:
            engine.store.maintenance_off(engine.deploy_id)
            for comp in engine.store.compensations(engine.deploy_id):
                specs = comp["spec"].get("steps", [])
                if (  # the off of this phase's maintenance, or of a span reaching it
                    comp["state"] == "pending"
                    and any(_span_of(s) is not None for s in specs)
                    and comp["phase"] <= phase
                ):
                    engine.store.set_compensation_state(comp["id"], "done")
    engine.reporter.result(
        outcome.ok, outcome.error or (outcome.output.strip().splitlines() or ["done"])[-1][:200]
    )
    return outcome


async def supervise(
    engine: Engine,
    job: Coroutine[Any, Any, StepOutcome],
    step: StepBase,
    limit: timedelta | None,
    *,
    watch_abort: bool,
) -> StepOutcome:
    """Run one attempt of a step as a task, watching its time limit and (forward steps
    only) the operator's abort, read every ABORT_POLL_S. On either, the work is stopped
    for real: the task is cancelled, which kills its process groups (SIGTERM, then SIGKILL
    after the grace), cancels its SQL statements on the server and kills its remote
    commands (see :mod:`tminus.work`), and the engine waits, at most the kill grace plus
    STOP_EXTRA_S, until it has stopped. Only then does anything else (a rollback) run.

    A wake (``SIGUSR1``, sent by whoever recorded an abort request; see
    :func:`tminus.engine.triggers.catch_wake`) ends the wait for the next poll at once, so a
    runner on this host stops its step within milliseconds of the request.

    Sets ``engine._interrupted``: None (finished, or timed out and stopped: an ordinary
    failure), "abort" (aborted, the work stopped) or "unconfirmed" (the work could not be
    confirmed stopped: the deploy must pause, not roll back over it).
    """
    engine._interrupted = None
    task: asyncio.Future[StepOutcome] = asyncio.ensure_future(job)
    deadline = None if limit is None else time.monotonic() + limit.total_seconds()
    why = ""
    # The wake (SIGUSR1 after an abort request) ends a wait at once: no poll to wait for.
    wake = engine.wake if watch_abort else None
    woken: asyncio.Future[Any] | None = None
    try:
        while True:
            wait: float | None = ABORT_POLL_S if watch_abort else None
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            if wake is not None and woken is None:
                woken = asyncio.ensure_future(wake.wait())
            waits: set[asyncio.Future[Any]] = {task} if woken is None else {task, woken}
            done, _ = await asyncio.wait(waits, timeout=wait, return_when=FIRST_COMPLETED)
            if task in done:
                return _outcome_of(engine, task)
            if woken is not None and woken.done():
                assert wake is not None
                wake.clear()
                woken = None
            if deadline is not None and time.monotonic() >= deadline:
                assert limit is not None
                why = f"timed out after {format_duration(limit)}"
                break
            if watch_abort and engine.store.abort_requested(engine.deploy_id):
                who = engine.store.deploy(engine.deploy_id)["abort_requested"] or "an operator"
                why = f"aborted by {who}"
                engine._interrupted = "abort"
                break
            if watch_abort and engine._fired is not None and engine._fired[0].action == "rollback":
                why = f"rollback trigger '{engine._fired[0].name}' fired"
                engine._interrupted = "trigger"
                break
    finally:
        if woken is not None:
            woken.cancel()
    engine.reporter.line(f"{why}: stopping the step's work")
    task.cancel()
    bound = work.grace_s() + STOP_EXTRA_S
    done, _ = await asyncio.wait({task}, timeout=bound)
    if done and task.cancelled():
        engine._event("step.stopped", f"{engine._title(step)}: {why}; its work was stopped")
        return StepOutcome(False, error=f"{why}; its work was stopped")
    if done and task.exception() is None:
        # It finished as it was being stopped: its effect is whole; record it as it is.
        engine._interrupted = None
        engine._abort_checked = float("-inf")  # the next boundary reads the abort
        return task.result()
    detail = ""
    if done:
        exc = task.exception()
        detail = f": {exc}" if isinstance(exc, work.WorkNotStopped) else ""
        if not isinstance(exc, work.WorkNotStopped):
            engine._event("step.stopped", f"{engine._title(step)}: {why}; its work was stopped")
            return StepOutcome(False, error=engine._mask(f"{why}; stopped with {exc!r}"))
    engine._interrupted = "unconfirmed"
    msg = engine._mask(
        f"{engine._title(step)} {why}, and its work could not be confirmed stopped within "
        f"{bound:g}s{detail}: check that it has stopped, then resume with "
        "--retry-step, --skip-step or --rollback"
    )
    engine._event("step.not_stopped", msg)
    return StepOutcome(False, error=msg)


def _outcome_of(engine: Engine, task: asyncio.Future[StepOutcome]) -> StepOutcome:
    exc = task.exception()
    if exc is None:
        return task.result()
    # a step kind's bug must not kill the deploy silently
    return StepOutcome(False, error=engine._mask(f"{type(exc).__name__}: {exc}"))
