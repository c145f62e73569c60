"""The run loop: checklist gate, approvals, phases (steps, verify, failure policy), rollback
(saga), success summary. It decides the next action from persisted state only and writes
every state change before it acts, so ``kill -9`` at any point followed by ``tminus resume``
reaches the same decision.

The :class:`Engine` holds the deploy's context and the loop; its parts live beside it:
:mod:`~tminus.engine.gates` (checklist, approvals, a phase's delay and window),
:mod:`~tminus.engine.phase` (steps, verify, failure policy, summary),
:mod:`~tminus.engine.attempt` (a step's attempts, supervised), :mod:`~tminus.engine.rollback`
(the saga), :mod:`~tminus.engine.resume_actions` (``--retry-step``, ``--skip-step``),
:mod:`~tminus.engine.triggers` (rollback triggers, abort requests),
:mod:`~tminus.engine.maintenance` (maintenance goes off) and :mod:`~tminus.engine.specs`
(recorded step specs). States and exit codes live in :mod:`tminus.engine.states`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tminus import faults, work
from tminus.clock import now
from tminus.engine.attempt import supervise
from tminus.engine.checking import run_check
from tminus.engine.delivery import flush as notify_flush
from tminus.engine.delivery import pump as notify_pump
from tminus.engine.gates import approvals, checklist, phase_start
from tminus.engine.liveness import HEARTBEAT_S
from tminus.engine.maintenance import maintenance_off_for
from tminus.engine.notify import notify_rules, step_notifier
from tminus.engine.phase import phase_end, step_node, summary, verify
from tminus.engine.program import Node, build_program
from tminus.engine.reporter import Reporter
from tminus.engine.required import answer_required, required_gate
from tminus.engine.resume_actions import apply_resume_action, apply_rollback_action
from tminus.engine.rollback import rollback_after, rollback_final, rollback_reason, run_rollback
from tminus.engine.specs import step_from_spec, step_spec
from tminus.engine.triggers import (
    abort_requested,
    abort_wants_rollback,
    catch_wake,
    on_trigger,
    pause_requested,
    release_wake,
    watch_triggers,
)
from tminus.plan.checks import CheckBase, CheckUse
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan, RollbackTrigger
from tminus.plan.steps import StepBase
from tminus.sources.base import CheckResult
from tminus.states import DONE_STEP_STATES, HANDOVER_REASON, TERMINAL, DeployState
from tminus.steps.base import DeployFleet, Services, StepContext, StepOutcome
from tminus.store.store import Store

if TYPE_CHECKING:
    from tminus.steps.base import Fleet

__all__ = ["Engine", "ResumeAction", "step_from_spec", "step_spec"]

ResumeAction = str  # "retry" | "skip" | "rollback" | ""


@dataclass
class Engine:
    store: Store
    plan: Plan
    deploy_id: str
    resolver: Resolver
    reporter: Reporter
    operator: str
    state_dir: Path = field(default_factory=lambda: Path(".tminus"))
    interactive: bool = False
    prompt: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        self.program = build_program(self.plan)
        self.resolver.artifacts = self._artifact
        self._artifacts_cache: dict[str, dict[str, Any]] | None = None
        self._abort_checked = float("-inf")
        self._pause_checked = float("-inf")
        #: Set by the wake (SIGUSR1 after an abort request, :func:`triggers.catch_wake`): the
        #: step supervisor waits on it beside the step, so an abort needs no poll to be seen.
        #: Made in the runner's loop (:meth:`_as_runner`); None outside a run.
        self.wake: asyncio.Event | None = None
        #: Set by :func:`~tminus.engine.attempt.supervise` when it stopped a step: "abort" (an
        #: operator's abort, the work stopped) or "unconfirmed" (the work could not be confirmed
        #: stopped).
        self._interrupted: str | None = None
        self._current_key: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        #: The phase running now (rollback triggers watch the phases they cover).
        self._phase_now = -1
        #: A rollback trigger that fired (rollback or pause), with the result that fired it.
        self._fired: tuple[RollbackTrigger, CheckResult] | None = None
        #: ``tminus serve``'s workers: SIGTERM asks the runner to pause before its next step
        #: (:data:`tminus.states.HANDOVER_REASON`) instead of dying mid-step.
        self.handover_on_sigterm = False
        self.handover_requested = False
        #: The deploy's fleet, built on first use (:attr:`fleet`).
        self._fleet = DeployFleet(
            self.plan, self.resolver, events=lambda: self.store.events(self.deploy_id)
        )

    @property
    def fleet(self) -> Fleet:
        """The deploy's one fleet (its SSH connections), built the first time a step or a
        retry needs it: a deploy with no fleet step builds none. Closed by the runner."""
        return self._fleet.get()

    # --- helpers --------------------------------------------------------------------------
    def _artifact(self, step_id: str, key: str) -> Any:
        if self._artifacts_cache is None:
            self._artifacts_cache = self.store.artifacts_by_step_id(self.deploy_id)
        return self._artifacts_cache.get(step_id, {}).get(key)

    def _mask(self, text: str) -> str:
        return self.resolver.mask(text)

    def _title(self, step: StepBase) -> str:
        return self._text(step.title())

    def _text(self, title: str) -> str:
        """A title with ``${…}`` resolved (``Release ${release}``), secrets masked; as
        written when a reference cannot be resolved yet (an artifact not produced yet)."""
        if "${" not in title:
            return title
        try:
            return self._mask(self.resolver.resolve(title))
        except Exception:  # any resolution problem: show it as written
            return title

    def _event(
        self,
        etype: str,
        message: str | None = None,
        data: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> None:
        self.store.event(
            self.deploy_id,
            etype,
            self._mask(message) if message else None,
            key=key,
            data=self.resolver.masker.mask_data(data) if data else None,
        )

    def _set_state(self, state: DeployState, reason: str | None = None, **extra: Any) -> None:
        values: dict[str, Any] = {
            "state": state.value,
            "reason": self._mask(reason) if reason else None,
        }
        if state in TERMINAL:
            values["finished_at"] = now()
        values.update(extra)
        self.store.set_deploy(
            self.deploy_id, event=f"deploy.{state.value}", message=values["reason"], **values
        )

    def _release_lock(self) -> None:
        self.store.release_lock(self.plan.name, self.plan.environment, self.deploy_id)

    def _step_of(self, node: Node) -> StepBase:
        return self.plan.phases[node.phase].steps[node.index]

    def _ctx(self, key: str, phase: int) -> StepContext:
        return StepContext(
            deploy_id=self.deploy_id,
            plan=self.plan,
            resolver=self.resolver,
            key=key,
            phase=phase,
            state_dir=self.state_dir,
            log=self.reporter.line,
            emit=lambda etype, msg, data: self._event(etype, msg, data, key=key),
            approvals_for=lambda gate: [
                a for a in self.store.approvals(self.deploy_id) if a["gate"] == gate
            ],
            services=Services(
                run_check=self.run_check,
                abort_requested=lambda: self.store.abort_requested(self.deploy_id),
                fleet_factory=lambda: self.fleet,
            ),
            notify=step_notifier(self, key),
        )

    def _notify_rules(self, when: str, message: str) -> None:
        """The plan's rules for ``when``: recorded in the outbox, then delivered
        (:mod:`tminus.engine.notify`)."""
        notify_rules(self, when, message)

    # --- checks ---------------------------------------------------------------------------
    async def run_check(self, ref: CheckBase | CheckUse) -> CheckResult:
        return await run_check(self.plan, self.resolver, self.state_dir, ref)

    # --- the run loop ---------------------------------------------------------------------
    async def drive(self, action: ResumeAction = "") -> DeployState:
        return await self._as_runner(self._drive(action))

    async def rollback_after(self, phases: list[int], reason: str) -> DeployState:
        """``tminus rollback``: undo the chosen phases of a deploy that ended (see
        :func:`tminus.engine.rollback.rollback_after`), as its runner."""
        return await self._as_runner(rollback_after(self, phases, reason))

    async def _as_runner(self, job: Coroutine[Any, Any, DeployState]) -> DeployState:
        """Run ``job`` as this deploy's runner: heartbeat, process records, fleet closed."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self.handover_on_sigterm:
            self._loop.add_signal_handler(signal.SIGTERM, self._request_handover)
        self.wake = asyncio.Event()
        woken = catch_wake(self, self._loop)
        beat = asyncio.ensure_future(self._heartbeat())
        stop_sending = asyncio.Event()
        sender = asyncio.ensure_future(notify_pump(self, stop_sending))
        work.set_sink(self)
        try:
            return await job
        finally:
            await notify_flush(self, sender, stop_sending)
            work.set_sink(None)
            if self.handover_on_sigterm:
                self._loop.remove_signal_handler(signal.SIGTERM)
            if woken:
                release_wake(self._loop)
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            await self._fleet.close()

    def _request_handover(self) -> None:
        if not self.handover_requested:
            self.reporter.line("SIGTERM: the step in flight finishes, then the deploy pauses")
        self.handover_requested = True

    async def _heartbeat(self) -> None:
        """Tell the store, every HEARTBEAT_S, that this runner is alive (``status`` shows a
        deploy whose runner stopped beating as *crashed*)."""
        while True:
            try:
                self.store.heartbeat(self.deploy_id)
            except Exception as exc:  # a store hiccup must not end the deploy
                self.reporter.line(f"heartbeat not written: {type(exc).__name__}: {exc}")
            await asyncio.sleep(HEARTBEAT_S)

    def started(self, rec: work.ProcRecord) -> None:
        """:class:`tminus.work.ProcSink`: a step spawned a process group; record it, so that
        whoever finds this runner dead can kill what is left of its work. Called from the
        thread that spawned it; the store is only ever used from the event loop's thread."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._record_process(rec)
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def record() -> None:
            try:
                self._record_process(rec)
                done.set_result(None)
            except BaseException as exc:  # handed to the spawning thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(record)
        done.result(timeout=60)

    def _record_process(self, rec: work.ProcRecord) -> None:
        key = self._current_key or ""
        self.store.add_process(self.deploy_id, key, rec.host, rec.pid, rec.token)
        faults.after_spawn()

    async def _drive(self, action: ResumeAction) -> DeployState:
        d = self.store.deploy(self.deploy_id)
        state = DeployState(d["state"])
        if state in TERMINAL:
            return state
        self.store.set_runner(self.deploy_id)
        if d["rollback_plan"] is not None:
            # A rollback is under way (it may have paused on an action that was in flight at
            # a crash): it goes on, whatever the operator asked; --retry-step and --skip-step
            # answer the paused action.
            if action in ("retry", "skip"):
                apply_rollback_action(self, action)
            return await run_rollback(
                self, reason=rollback_reason(self, d), final=rollback_final(d)
            )
        if state == DeployState.ROLLING_BACK or action == "rollback":
            return await run_rollback(
                self, reason=d["reason"] or "operator asked for rollback", final=rollback_final(d)
            )
        action = answer_required(self, action)  # a pause for a required channel's message
        rows = self.store.step_rows(self.deploy_id)
        if action in ("retry", "skip"):
            apply_resume_action(self, action, rows)
            rows = self.store.step_rows(self.deploy_id)
        self._set_state(DeployState.RUNNING)
        watch = asyncio.ensure_future(watch_triggers(self))
        try:
            return await self._forward(rows)
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _forward(self, rows: dict[str, dict[str, Any]]) -> DeployState:
        total = len(self.plan.phases)
        announced: set[int] = set()
        for node in self.program:
            if node.kind in ("step", "phase_start") and abort_requested(self):
                return await self.abort(rollback=abort_wants_rollback(self))
            if node.kind in ("step", "phase_start"):
                row = rows.get(node.key)
                if row is None or row["state"] not in DONE_STEP_STATES:
                    if self.handover_requested:
                        return self._hand_over(node)
                    paused_by = pause_requested(self)
                    if paused_by:
                        return self._pause_on_request(node, paused_by)
            fired = await on_trigger(self, node)
            if fired is not None:
                return fired
            row = rows.get(node.key)
            if row is not None and row["state"] in DONE_STEP_STATES:
                continue
            blocked = await required_gate(self, node)  # required channels' messages first
            if blocked is not None:
                return blocked
            if node.phase >= 0:
                self._phase_now = node.phase
            if node.phase >= 0 and node.phase not in announced and node.kind != "phase_start":
                phase = self.plan.phases[node.phase]
                est = phase.estimate.total_seconds() if phase.estimate else None
                self.reporter.phase(node.phase, total, phase.name, est)
                announced.add(node.phase)
            outcome = await self._node(node, row)
            if node.kind == "phase_start" and outcome is None:
                announced.add(node.phase)
            if outcome is not None:
                return outcome
        return await self._complete()

    async def _node(self, node: Node, row: dict[str, Any] | None) -> DeployState | None:
        if node.kind == "checklist":
            return await checklist(self, node)
        if node.kind == "approvals":
            return approvals(self, node)
        if node.kind == "phase_start":
            return await phase_start(self, node)
        if node.kind == "step":
            return await step_node(self, node, row)
        if node.kind == "verify":
            return await verify(self, node)
        if node.kind == "phase_end":
            return await phase_end(self, node)
        return await summary(self, node)

    # --- steps -----------------------------------------------------------------------------
    async def _supervise(
        self,
        job: Coroutine[Any, Any, StepOutcome],
        step: StepBase,
        limit: timedelta | None,
        *,
        watch_abort: bool,
    ) -> StepOutcome:
        """Run one attempt of a step, supervised: :func:`tminus.engine.attempt.supervise`
        (:mod:`tminus.engine.retry` runs its attempts through it)."""
        return await supervise(self, job, step, limit, watch_abort=watch_abort)

    # --- pause, failure, abort ------------------------------------------------------------
    def _pause(self, node: Node, reason: str, crashed: bool = False) -> DeployState:
        self._notify_rules("paused", f"{self.deploy_id} paused: {reason}")
        self._set_state(DeployState.PAUSED, reason)
        if crashed:
            self._event("step.crashed", reason, key=node.key)
        return DeployState.PAUSED

    def _hand_over(self, node: Node) -> DeployState:
        """Pause before ``node`` because the serve process running this deploy is stopping;
        a server resumes it (see :data:`HANDOVER_REASON`)."""
        self.reporter.line(f"SIGTERM: pausing before {node.key}; a tminus serve resumes it")
        self._set_state(DeployState.PAUSED, HANDOVER_REASON)
        self._event("deploy.handed_over", HANDOVER_REASON, {"before": node.key}, key=node.key)
        return DeployState.PAUSED

    def _pause_on_request(self, node: Node, who: str) -> DeployState:
        """Pause before ``node`` because a person asked (the API's pause): the step before it
        finished; ``tminus resume`` (or the dashboard) goes on from here."""
        reason = f"paused by {who} (requested); continue with: tminus resume {self.deploy_id}"
        self.reporter.line(f"pause requested by {who}: pausing before {node.key}")
        self.store.set_deploy(self.deploy_id, pause_requested=None)
        self._set_state(DeployState.PAUSED, reason)
        self._event("deploy.pause_honoured", reason, {"before": node.key, "by": who}, key=node.key)
        return DeployState.PAUSED

    def _finish_failed(self, reason: str) -> DeployState:
        self._set_state(DeployState.FAILED, reason)
        self._release_lock()
        return DeployState.FAILED

    async def abort(self, rollback: bool) -> DeployState:
        """Stop the deploy as *aborted* (not failed), optionally rolling back first."""
        d = self.store.deploy(self.deploy_id)
        if DeployState(d["state"]) in TERMINAL:
            return DeployState(d["state"])
        who = d["abort_requested"] or self.operator
        if not d["abort_requested"]:
            self.store.set_deploy(
                self.deploy_id,
                abort_requested=who,
                event="deploy.abort_requested",
                message=f"abort requested by {who}",
            )
        if rollback:
            return await run_rollback(self, reason=f"aborted by {who}", final=DeployState.ABORTED)
        await maintenance_off_for(self, None, "deploy aborted")
        self._set_state(DeployState.ABORTED, f"aborted by {who}")
        self._release_lock()
        return DeployState.ABORTED

    async def _complete(self) -> DeployState:
        """Every node is done: record success (again, after a crash) and free the lock. An
        abort that arrived after the last step had done its work is reported, not dropped."""
        d = self.store.deploy(self.deploy_id)
        if d["abort_requested"] and d["state"] != DeployState.SUCCEEDED.value:
            msg = (
                f"the abort requested by {d['abort_requested']} arrived after the last step had "
                "done its work: the deploy succeeded, nothing was stopped"
            )
            self.reporter.line(msg)
            self._event("deploy.abort_too_late", msg)
        await maintenance_off_for(self, None, "the deploy succeeded", keep_ok=True)
        self._set_state(DeployState.SUCCEEDED, None)
        self._release_lock()
        return DeployState.SUCCEEDED
