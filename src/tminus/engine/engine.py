"""The run loop: checklist gate, approvals, phases (steps, verify, failure policy), rollback
(saga), success summary. It decides the next action from persisted state only and writes
every state change before it acts, so ``kill -9`` at any point followed by ``tminus resume``
reaches the same decision.

States and exit codes live in :mod:`tminus.engine.states`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from tminus import faults, work
from tminus.engine.checking import run_check
from tminus.engine.liveness import HEARTBEAT_S
from tminus.engine.program import Node, build_program
from tminus.engine.reporter import Reporter
from tminus.engine.states import DONE_STEP_STATES, TERMINAL, DeployState, StepState
from tminus.errors import NotResumable
from tminus.hosts.fleet import Fleet
from tminus.metrics.base import CheckResult
from tminus.plan.checks import CheckBase, CheckUse
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Phase, Plan, RollbackTrigger
from tminus.plan.steps import Step, StepBase
from tminus.plan.values import format_duration
from tminus.steps.base import Services, Span, StepContext, StepKind, StepOutcome
from tminus.steps.registry import get_kind, implemented_kinds, kind_of
from tminus.store.store import Store, now

__all__ = ["Engine", "ResumeAction", "step_from_spec", "step_spec"]

#: How often (seconds) the run loop looks for an operator's abort request.
ABORT_POLL_S = 0.5

#: How long (seconds), beyond the kill grace, the engine waits for a cancelled step's work to
#: stop (its processes killed, its statements cancelled) before it gives up and pauses the
#: deploy instead of rolling back over work that may still be running. Longer than
#: :func:`tminus.work.in_thread`'s own bound, so that its verdict comes first.
STOP_EXTRA_S = 15.0

ResumeAction = str  # "retry" | "skip" | "rollback" | ""


def step_spec(step: StepBase) -> dict[str, Any]:
    return step.model_dump(mode="json", by_alias=True, exclude_none=True)


def step_from_spec(spec: dict[str, Any]) -> StepBase:
    return _step_adapter().validate_python(spec)


@functools.cache
def _step_adapter() -> TypeAdapter[StepBase]:
    adapter: TypeAdapter[StepBase] = TypeAdapter(Step)
    return adapter


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
        #: Set by :meth:`_supervise` when it stopped a step: "abort" (an operator's abort,
        #: the work stopped) or "unconfirmed" (the work could not be confirmed stopped).
        self._interrupted: str | None = None
        self._current_key: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        #: The phase running now (rollback triggers watch the phases they cover).
        self._phase_now = -1
        #: A rollback trigger that fired (rollback or pause), with the result that fired it.
        self._fired: tuple[RollbackTrigger, CheckResult] | None = None
        #: The deploy's fleet, built on first use (:attr:`fleet`).
        self._fleet: Fleet | None = None

    @property
    def fleet(self) -> Fleet:
        """The deploy's one fleet (its SSH connections), built the first time a step or a
        retry needs it: a deploy with no fleet step builds none. Closed by the runner."""
        if self._fleet is None:
            self._fleet = Fleet(
                self.plan, self.resolver, events=lambda: self.store.events(self.deploy_id)
            )
        return self._fleet

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
        )

    def _notify_rules(self, when: str, message: str) -> None:
        for rule in self.plan.notifications.rules:
            if rule.when != when:
                continue
            channels = rule.channels or list(self.plan.notifications.channels)
            text = self._mask(self.resolver.resolve(rule.message) if rule.message else message)
            self.reporter.line(f"[notify {','.join(channels) or 'log'}] {text}")
            self._event("notify", text, {"when": when, "channels": channels})

    # --- checks ---------------------------------------------------------------------------
    async def run_check(self, ref: CheckBase | CheckUse) -> CheckResult:
        return await run_check(self.plan, self.resolver, self.state_dir, ref)

    # --- the run loop ---------------------------------------------------------------------
    async def drive(self, action: ResumeAction = "") -> DeployState:
        return await self._as_runner(self._drive(action))

    async def rollback_after(self, phases: list[int], reason: str) -> DeployState:
        """``tminus rollback``: undo the chosen phases of a deploy that ended (succeeded, is
        waiting for a delayed phase, or was partly rolled back): their rollback steps and
        the compensations still owed, newest phase first, from what was recorded at run
        time. The deploy then ends *rolled_back*."""

        async def go() -> DeployState:
            self.store.set_runner(self.deploy_id)
            done = sum(1 for e in self.store.events(self.deploy_id) if e["type"] == "rollback.plan")
            items = self._build_rollback_items(sorted(phases, reverse=True), first_phase=None)
            for n, item in enumerate(items):
                item["row"] = f"rollback/g{done + 1}/{n}"
            self._event(
                "rollback.plan",
                f"{self.operator} rolls back phase(s) "
                + ", ".join(str(p + 1) for p in sorted(phases))
                + f": {len(items)} action(s)",
                {"phases": [p + 1 for p in sorted(phases)], "actions": len(items)},
            )
            self._set_state(DeployState.ROLLING_BACK, reason, rollback_plan=items)
            self._notify_rules("rollback", f"{self.deploy_id} is rolling back: {reason}")
            return await self._rollback(reason=reason, final=DeployState.ROLLED_BACK)

        return await self._as_runner(go())

    async def _as_runner(self, job: Coroutine[Any, Any, DeployState]) -> DeployState:
        """Run ``job`` as this deploy's runner: heartbeat, process records, fleet closed."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        beat = asyncio.ensure_future(self._heartbeat())
        work.set_sink(self)
        try:
            return await job
        finally:
            work.set_sink(None)
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            if self._fleet is not None:
                await self._fleet.close()

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
                self._apply_rollback_action(action)
            return await self._rollback(
                reason=self._rollback_reason(d), final=self._rollback_final(d)
            )
        if state == DeployState.ROLLING_BACK or action == "rollback":
            return await self._rollback(
                reason=d["reason"] or "operator asked for rollback", final=self._rollback_final(d)
            )
        rows = self.store.step_rows(self.deploy_id)
        if action in ("retry", "skip"):
            self._apply_resume_action(action, rows)
            rows = self.store.step_rows(self.deploy_id)
        self._set_state(DeployState.RUNNING)
        watch = asyncio.ensure_future(self._watch_triggers())
        try:
            return await self._forward(rows)
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)

    async def _forward(self, rows: dict[str, dict[str, Any]]) -> DeployState:
        total = len(self.plan.phases)
        announced: set[int] = set()
        for node in self.program:
            if node.kind in ("step", "phase_start") and self._abort_requested():
                return await self.abort(rollback=self._abort_wants_rollback())
            fired = await self._on_trigger(node)
            if fired is not None:
                return fired
            row = rows.get(node.key)
            if row is not None and row["state"] in DONE_STEP_STATES:
                continue
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

    async def _watch_triggers(self) -> None:
        """Evaluate the plan's rollback triggers (those with a check) while the phases they
        cover run, each every ``interval``. A failed check fires it: ``notify`` is recorded
        and notified; ``rollback`` and ``pause`` are handed to the run loop (the running step
        is stopped for a rollback, finishes for a pause). No data or a failing source never
        fires a trigger: it is recorded as ``trigger.no_verdict``."""
        triggers = [t for t in self.plan.rollback_triggers if t.check is not None]
        if not triggers:
            return
        covers = {
            id(t): {self.plan.phase_index(p) for p in t.phases} if t.phases else None
            for t in triggers
        }
        phase_seen = -1
        due: dict[int, float] = {}
        notified: set[int] = set()
        while self._fired is None:
            await asyncio.sleep(0.1)
            if self._phase_now != phase_seen:  # a new phase: each trigger waits one interval
                phase_seen = self._phase_now
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
                result = await self.run_check(t.check)
                data = {"trigger": t.name, "status": result.status, "action": t.action}
                if result.status in ("inconclusive", "error"):
                    self._event("trigger.no_verdict", f"{t.name}: {result.message}", data)
                    continue
                if result.passed:
                    continue
                msg = f"rollback trigger '{t.name}' fired: {result.message}"
                self._event("trigger.fired", msg, {**data, "value": _jsonable(result.value)})
                self.reporter.line(msg)
                if t.action == "notify":
                    if id(t) not in notified:
                        notified.add(id(t))
                        self._notify_rules("failure", f"{self.deploy_id}: {msg}")
                    continue
                self._fired = (t, result)
                return

    async def _on_trigger(self, node: Node) -> DeployState | None:
        """Act on a trigger that fired: roll back (the trigger is the recorded cause) or
        pause. None when none has fired."""
        if self._fired is None:
            return None
        t, result = self._fired
        reason = f"rollback trigger '{t.name}' fired: {result.message}"
        if t.action == "pause":
            self._fired = None
            return self._pause(node, reason)
        self.store.set_deploy(self.deploy_id, fault_at=now())
        phase = node.phase if node.phase >= 0 else self._phase_now
        return await self._rollback(reason=reason, failed_phase=phase if phase >= 0 else None)

    def _abort_requested(self) -> bool:
        """Has an operator asked to abort? Read at most every ABORT_POLL_S seconds, so a plan
        of many short steps does not pay a query per step; a step boundary after that reads
        it, so an abort takes effect within ABORT_POLL_S plus the running step."""
        t = time.monotonic()
        if t - self._abort_checked < ABORT_POLL_S:
            return False
        self._abort_checked = t
        return self.store.abort_requested(self.deploy_id)

    def _rollback_final(self, d: dict[str, Any]) -> DeployState:
        return DeployState.ABORTED if d["abort_requested"] else DeployState.ROLLED_BACK

    def _abort_wants_rollback(self) -> bool:
        """Did the newest abort request ask for a rollback (``tminus abort --rollback``)?"""
        for e in reversed(self.store.events(self.deploy_id)):
            if e["type"] == "deploy.abort_requested":
                return bool((e.get("data") or {}).get("rollback"))
        return False

    def _rollback_reason(self, d: dict[str, Any]) -> str:
        """Why the rollback under way started (its event), not why it last paused."""
        for e in reversed(self.store.events(self.deploy_id)):
            if e["type"] == "deploy.rolling_back" and e["message"]:
                return str(e["message"])
        return str(d["reason"] or "rollback")

    def _apply_rollback_action(self, action: str) -> None:
        """``--retry-step``/``--skip-step`` on a rollback that paused on an action that was in
        flight when the runner stopped."""
        rows = self.store.step_rows(self.deploy_id)
        inflight = [
            k for k, r in rows.items() if k.startswith("rollback/") and r["state"] == "running"
        ]
        if not inflight:
            raise NotResumable(f"the rollback has no interrupted action to {action}")
        for key in inflight:
            title = rows[key]["title"]
            if action == "skip":
                self.store.set_step_state(self.deploy_id, key, StepState.SKIPPED, title=title)
                self._event("operator.skip", f"{self.operator} skipped {title}", key=key)
            else:
                self.store.set_step_state(self.deploy_id, key, "retry", title=title)
                self._event("operator.retry", f"{self.operator} retries {title}", key=key)

    def _apply_resume_action(self, action: str, rows: dict[str, dict[str, Any]]) -> None:
        for node in self.program:
            row = rows.get(node.key)
            if row is None or row["state"] in DONE_STEP_STATES:
                continue
            if row["state"] in ("failed", "running", "waiting"):
                if action == "skip":
                    if row["state"] == "running":
                        self._owe_undo(node.key)
                    self.store.set_step_state(
                        self.deploy_id, node.key, StepState.SKIPPED, title=self._text(node.title)
                    )
                    self._event(
                        "operator.skip",
                        f"{self.operator} skipped {self._text(node.title)}",
                        key=node.key,
                    )
                else:
                    self.store.set_step_state(
                        self.deploy_id, node.key, "retry", title=self._text(node.title)
                    )
                    self._event(
                        "operator.retry",
                        f"{self.operator} retries {self._text(node.title)}",
                        key=node.key,
                    )
                return
        raise NotResumable(f"there is no failed or interrupted step to {action}")

    def _owe_undo(self, key: str) -> None:
        """``--skip-step`` on a step that was in flight at a crash says its effect took place
        (the pause asks the operator to check): its undo is owed, so a later rollback runs it.
        (Skipping a step that *failed* leaves its undo void, as the failure left it.)"""
        for comp in self.store.compensations(self.deploy_id):
            if comp["source_key"] == key and comp["state"] == "armed":
                self.store.set_compensation_state(comp["id"], "pending")

    async def _node(self, node: Node, row: dict[str, Any] | None) -> DeployState | None:
        if node.kind == "checklist":
            return await self._checklist(node)
        if node.kind == "approvals":
            return self._approvals(node)
        if node.kind == "phase_start":
            return await self._phase_start(node)
        if node.kind == "step":
            return await self._step(node, row)
        if node.kind == "verify":
            return await self._verify(node)
        if node.kind == "phase_end":
            return await self._phase_end(node)
        return await self._summary(node)

    # --- gates ----------------------------------------------------------------------------
    async def _checklist(self, node: Node) -> DeployState | None:
        item = self.plan.checklist[node.index]

        async def automated(n: Node) -> DeployState | None:
            it = self.plan.checklist[n.index]
            assert it.check is not None
            self.reporter.step(f"checklist: {it.item}")
            result = await self.run_check(it.check)
            self.reporter.result(result.passed, result.message)
            if not result.passed:
                self._event("checklist.failed", f"{it.item}: {result.message}", key=n.key)
                return self._finish_failed(f"checklist item failed: {it.item}: {result.message}")
            return None

        if item.check is not None:
            failed = await automated(node)
            if failed is not None:
                return failed
            self.store.set_step_state(
                self.deploy_id, node.key, StepState.SUCCEEDED, title=item.item
            )
            return None
        confirmed = self.store.confirmations(self.deploy_id)

        def unconfirmed(it: Any) -> bool:
            return not any(n in confirmed for n in {it.item, it.id} - {None})

        if unconfirmed(item):
            if self.interactive and self.prompt is not None and self.prompt(item.item):
                self.store.add_confirmation(self.deploy_id, item.item, self.operator)
            else:
                # Stop once for all of them: the automated items after this one run now (a
                # failing one fails the deploy; they run again on resume), then every manual
                # item still unconfirmed is listed with the command that confirms it.
                later = [n for n in self.program if n.kind == "checklist" and n.index > node.index]
                pending = [item.item]
                for n in later:
                    it = self.plan.checklist[n.index]
                    if it.check is not None:
                        failed = await automated(n)
                        if failed is not None:
                            return failed
                    elif unconfirmed(it):
                        pending.append(it.item)
                cmd = f"tminus resume {self.deploy_id}"
                if len(pending) == 1:
                    why = (
                        f"checklist item needs confirmation: {item.item} "
                        f'({cmd} --confirm "{item.item}")'
                    )
                else:
                    why = f"{len(pending)} checklist items need confirmation:" + "".join(
                        f'\n  {p}: {cmd} --confirm "{p}"' for p in pending
                    )
                    why += f"\n  all at once: {cmd}" + "".join(f' --confirm "{p}"' for p in pending)
                self._set_state(DeployState.AWAITING_CONFIRMATION, why)
                return DeployState.AWAITING_CONFIRMATION
        self.store.set_step_state(self.deploy_id, node.key, StepState.SUCCEEDED, title=item.item)
        return None

    def _approvals(self, node: Node) -> DeployState | None:
        given = {
            a["role"] for a in self.store.approvals(self.deploy_id) if a["gate"] == "approvals"
        }
        missing = [r for r in self.plan.approvals.required if r not in given]
        if missing:
            self._notify_rules(
                "approval_needed", f"{self.deploy_id} needs approval by {', '.join(missing)}"
            )
            self._set_state(
                DeployState.AWAITING_APPROVAL,
                f"waiting for approval by {', '.join(missing)} "
                f"(tminus approve {self.deploy_id} --role ROLE --as NAME)",
            )
            return DeployState.AWAITING_APPROVAL
        self.store.set_step_state(self.deploy_id, node.key, StepState.SUCCEEDED, title="Approvals")
        return None

    # --- phases ---------------------------------------------------------------------------
    async def _phase_start(self, node: Node) -> DeployState | None:
        phase = self.plan.phases[node.phase]
        if phase.after is not None and node.phase > 0:
            prev = self.store.phase_rows(self.deploy_id).get(node.phase - 1)
            ended = prev["ended_at"] if prev else None
            if ended is not None:
                due = ended + phase.after
                if now() < due:
                    await self._maintenance_off_for(
                        None, "the deploy waits for a delayed phase", keep_ok=True
                    )
                    self._set_state(
                        DeployState.SCHEDULED,
                        f"phase '{phase.name}' is due at {due:%Y-%m-%d %H:%M:%S %Z}",
                        due_at=due,
                    )
                    self._release_lock()
                    return DeployState.SCHEDULED
        overrun = await self._overrun(node)
        if overrun is not None:
            return overrun
        est = phase.estimate.total_seconds() if phase.estimate else None
        self.reporter.phase(node.phase, len(self.plan.phases), phase.name, est)
        self.store.phase_started(self.deploy_id, node.phase, phase.name, est)
        self.store.set_step_state(self.deploy_id, node.key, StepState.SUCCEEDED, title=phase.name)
        self._notify_rules("phase_start", f"phase '{phase.name}' started")
        return None

    async def _overrun(self, node: Node) -> DeployState | None:
        """Before a phase of the window starts: do the estimates of the phases left still fit
        before the window ends? If not, apply ``window.on_overrun`` (recorded as
        ``window.overrun`` and notified): pause (once: resuming goes on past it), roll back,
        or continue. A deploy started with ``--outside-window`` has no window to keep."""
        from zoneinfo import ZoneInfo

        w = self.plan.window
        in_window = self.plan.in_window_phases()
        if w.start is None or w.duration is None or node.phase >= len(in_window):
            return None
        events = self.store.events(self.deploy_id)
        if any(e["type"] == "deploy.outside_window" for e in events):
            return None
        if any(e["type"] == "window.overrun" and e["key"] == node.key for e in events):
            return None  # paused on it once; the operator resumed
        start = w.start if w.start.tzinfo else w.start.replace(tzinfo=ZoneInfo(w.timezone))
        end = start + w.duration
        left = sum((p.estimate or timedelta() for p in in_window[node.phase :]), timedelta())
        if now() + left <= end:
            return None
        zone = ZoneInfo(w.timezone)
        reason = (
            f"window overrun: the phases left from '{in_window[node.phase].name}' need "
            f"{format_duration(left)} by their estimates, and the window ends at "
            f"{end.astimezone(zone):%Y-%m-%d %H:%M %Z} (on_overrun: {w.on_overrun})"
        )
        self._event("window.overrun", reason, {"action": w.on_overrun}, key=node.key)
        self._notify_rules("failure", f"{self.deploy_id}: {reason}")
        self.reporter.line(reason)
        if w.on_overrun == "continue":
            return None
        if w.on_overrun == "pause":
            self._set_state(DeployState.PAUSED, f"{reason}; resume to go on anyway, or --rollback")
            return DeployState.PAUSED
        started = self.store.phase_rows(self.deploy_id)
        return await self._rollback(reason=reason, failed_phase=max(started) if started else None)

    async def _phase_end(self, node: Node) -> DeployState | None:
        phase = self.plan.phases[node.phase]
        await self._maintenance_off_for(node.phase, "the phase ended")
        self.store.phase_finished(self.deploy_id, node.phase, "succeeded")
        self.store.set_step_state(self.deploy_id, node.key, StepState.SUCCEEDED, title=phase.name)
        self._notify_rules("phase_end", f"phase '{phase.name}' completed")
        return None

    async def _maintenance_off_for(
        self, phase: int | None, why: str, *, keep_ok: bool = False
    ) -> None:
        """The guarantee: maintenance goes off. At the end of ``phase``: what that phase (or
        a span ``until:`` it) turned on. With ``phase`` None (the deploy stops: rolled back,
        failed, aborted, succeeded, waiting for a delayed phase): everything still on,
        including maintenance turned on by a rollback step, except, with ``keep_ok`` (it
        succeeded), what a step turned on with ``keep: true``."""
        if not self._maintenance_open():
            return
        kept = False
        for comp in self.store.compensations(self.deploy_id):
            if comp["state"] not in ("armed", "pending"):
                continue
            for s in comp["spec"].get("steps", []):
                if _span_of(s) != "close":
                    continue
                if phase is not None and (
                    s.get("keep") or self._span_end(s, comp["phase"]) > phase
                ):
                    continue  # a span (on until a later phase ends), or kept to the end
                if keep_ok and s.get("keep"):
                    kept = True
                    continue
                if await self._maintenance(step_from_spec(s), why, comp["source_key"]):
                    self.store.set_compensation_state(comp["id"], "done")
        if phase is None and not kept and self._maintenance_open():
            # turned on with no compensation (by a rollback step): off with the same settings
            off = self._span_step("close")
            if off is not None:
                await self._maintenance(off, why, "maintenance")
            else:
                self._event("maintenance.left_on", "maintenance is on and no step can turn it off")

    def _maintenance_open(self) -> bool:
        return any(w["off_at"] is None for w in self.store.maintenance_windows(self.deploy_id))

    def _span_end(self, spec: dict[str, Any], phase: int) -> int:
        """The phase at whose end maintenance turned on in ``phase`` goes off."""
        until = spec.get("until")
        end = self.plan.phase_index(until) if until is not None else None
        return phase if end is None else max(end, phase)

    def _span_step(self, span: Span, phase: int | None = None) -> StepBase | None:
        """A step that opens or closes the maintenance span with the plan's own settings (the
        phase's own span step's, if it has one, else the plan's ``maintenance:``, else any
        span step's settings): made by the kind of the phase's (or plan's) span steps, else
        by the first kind that makes one from the plan's settings alone."""
        phases = [phase] if phase is not None else range(len(self.plan.phases))
        steps = [
            s for p in phases for s in (*self.plan.phases[p].steps, *self.plan.phases[p].rollback)
        ]
        spanning = [s for s in steps if kind_of(s).maintenance_span(s) is not None]
        for kind in self._span_kinds(spanning):
            made = kind.span_step(self.plan, spanning, span)
            if made is not None:
                return made
        return None

    def _span_kinds(self, spanning: Sequence[StepBase]) -> Iterator[StepKind]:
        """The kinds of ``spanning``, then (imported only if asked) every other kind."""
        seen: set[str] = set()
        for s in spanning:
            kind = kind_of(s)
            if kind.kind not in seen:
                seen.add(kind.kind)
                yield kind
        for name in sorted(implemented_kinds() - seen):
            yield get_kind(name)

    async def _maintenance(self, step: StepBase, why: str, key: str, phase: int = -1) -> bool:
        """Run ``step``, which opens or closes the maintenance span, outside the plan's steps
        (the engine's guarantee that maintenance goes off; a downtime phase's rollback)."""
        kind = kind_of(step)
        span = kind.maintenance_span(step)
        assert span is not None
        self.reporter.step(f"Maintenance mode {'on' if span == 'open' else 'off'}", why)
        out = await kind.execute(step, self._ctx(key, phase))
        self.reporter.result(out.ok, out.output or out.error or "")
        if out.ok and span == "close":
            self.store.maintenance_off(self.deploy_id)
        elif out.ok:
            self.store.maintenance_on(self.deploy_id, phase)
        return out.ok

    def _downtime(self, phase: int) -> bool:
        return 0 <= phase < len(self.plan.phases) and self.plan.phases[phase].downtime

    # --- steps ----------------------------------------------------------------------------
    async def _step(self, node: Node, row: dict[str, Any] | None) -> DeployState | None:
        step = self._step_of(node)
        if row is not None and row["state"] == "failed":
            # The failure was recorded but its policy was not (a crash in between): apply it,
            # never re-run the step.
            return await self._failure(node, row["error"] or "failed")
        if row is not None and row["state"] == "running":
            if not _rerun_safe(step):
                return self._pause(
                    node,
                    f"step '{self._text(node.title)}' was in flight when the runner stopped "
                    "and is not idempotent: check whether it took effect, then resume with "
                    "--retry-step, "
                    "--skip-step or --rollback",
                    crashed=True,
                )
            self._event(
                "step.rerun",
                f"re-running idempotent step {self._text(node.title)} after a crash",
                key=node.key,
            )
        outcome = await self._execute(step, node.key, node.phase, row)
        if self._interrupted == "unconfirmed":
            return self._pause(node, outcome.error or "the step's work may still be running")
        if self._interrupted == "abort":
            return await self.abort(rollback=self._abort_wants_rollback())
        if self._interrupted == "trigger" or (outcome.ok and self._fired is not None):
            fired = await self._on_trigger(node)
            if fired is not None:
                return fired
        if outcome.waiting:
            self._set_state(DeployState.AWAITING_APPROVAL, outcome.waiting)
            return DeployState.AWAITING_APPROVAL
        if outcome.pause:  # no verdict (missing data): pause, whatever on_failure says
            if self.store.abort_requested(self.deploy_id):
                return await self.abort(rollback=False)
            return self._pause(node, f"{self._text(node.title)}: {outcome.pause}")
        if outcome.ok:
            return None
        return await self._failure(node, outcome.error or "failed")

    async def _execute(
        self,
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
        ctx = self._ctx(key, phase)
        undo: list[StepBase] = [] if rolling_back else list(step.undo)
        builtin = None if rolling_back else kind.compensation(step, ctx)
        if builtin is not None:
            undo.append(builtin.step)
        if undo:
            self.store.arm_compensation(
                self.deploy_id,
                phase=phase,
                source_key=key,
                title=f"undo: {self._title(step)}",
                spec={"steps": [step_spec(u) for u in undo]},
                partial_ok=builtin is not None and builtin.partial_ok,
            )
        attempts_before = row["attempts"] if row else 0
        self._current_key = key
        self.reporter.step(self._title(step), self._mask(kind.describe(step, self.resolver)))
        # Per-host kinds (the fleet kinds) apply timeout and retries to each host.
        retries = None if kind.per_host else step.retries
        total = retries.attempts if retries else 1
        delay = retries.delay.total_seconds() if retries else 0.0
        outcome = StepOutcome(False, error="not run")
        for attempt in range(1, total + 1):
            self.store.step_started(
                self.deploy_id,
                key,
                title=self._title(step),
                kind=kind.kind,
                step_id=None if rolling_back else step.id,
                attempts=attempts_before + attempt,
                new=row is None and attempt == 1,
            )
            # Some kinds apply their own timeout (to their command, to each host).
            own_timeout = kind.own_timeout or kind.per_host
            limit = None if own_timeout or step.timeout is None else step.timeout
            faults.effect_started(key)
            outcome = await self._supervise(
                kind.execute(step, ctx), step, limit, watch_abort=not rolling_back
            )
            if self._interrupted is not None:
                break
            faults.effect_done(key, outcome.ok)
            if outcome.ok or outcome.waiting or outcome.pause or attempt == total:
                break
            self.reporter.result(
                False, f"{outcome.error} — retry {attempt}/{total - 1} in {delay:g}s"
            )
            self.store.step_finished(  # still in flight: the step has attempts left
                self.deploy_id,
                key,
                state="running",
                error=outcome.error,
                output=self._mask(outcome.output)[-20000:],
            )
            await asyncio.sleep(delay)
            if retries is not None:
                delay = min(delay * retries.backoff, retries.max_delay.total_seconds())
        if self._interrupted == "unconfirmed":
            # The work may still be running: the step stays in flight, and the operator decides.
            self.store.step_finished(self.deploy_id, key, state="running", error=outcome.error)
            self.reporter.result(False, outcome.error or "")
            return outcome
        if outcome.waiting:
            self.store.step_finished(self.deploy_id, key, state="waiting", error=outcome.waiting)
            faults.recorded(key)
            return outcome
        if outcome.pause:  # "waiting" so that a plain `tminus resume` runs the step again
            self.store.step_finished(
                self.deploy_id,
                key,
                state="waiting",
                error=outcome.pause,
                output=self._mask(outcome.output)[-20000:],
                artifacts=self.resolver.masker.mask_data(outcome.artifacts),
            )
            faults.recorded(key)
            self.reporter.result(False, outcome.pause)
            return outcome
        state = StepState.SUCCEEDED if outcome.ok else StepState.FAILED
        comp_state: dict[str, Any] | None = None
        if undo:
            partial = builtin is not None and builtin.partial_ok
            comp_state = {"state": "pending" if (outcome.ok or partial) else "void"}
        self.store.step_finished(
            self.deploy_id,
            key,
            state=state.value,
            output=self._mask(outcome.output)[-20000:],
            error=outcome.error,
            artifacts=self.resolver.masker.mask_data(outcome.artifacts),
            compensation=comp_state,
        )
        faults.recorded(key)
        if outcome.ok and step.id:
            self._artifacts_cache = None
        span = kind.maintenance_span(step)
        if span is not None and outcome.ok:
            if span == "open":
                self.store.maintenance_on(self.deploy_id, phase)
            else:
                self.store.maintenance_off(self.deploy_id)
                for comp in self.store.compensations(self.deploy_id):
                    specs = comp["spec"].get("steps", [])
                    if (  # the off of this phase's maintenance, or of a span reaching it
                        comp["state"] == "pending"
                        and any(_span_of(s) is not None for s in specs)
                        and comp["phase"] <= phase
                    ):
                        self.store.set_compensation_state(comp["id"], "done")
        self.reporter.result(
            outcome.ok, outcome.error or (outcome.output.strip().splitlines() or ["done"])[-1][:200]
        )
        return outcome

    async def _supervise(
        self,
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

        Sets ``self._interrupted``: None (finished, or timed out and stopped: an ordinary
        failure), "abort" (aborted, the work stopped) or "unconfirmed" (the work could not be
        confirmed stopped: the deploy must pause, not roll back over it).
        """
        self._interrupted = None
        task: asyncio.Future[StepOutcome] = asyncio.ensure_future(job)
        deadline = None if limit is None else time.monotonic() + limit.total_seconds()
        why = ""
        while True:
            wait: float | None = ABORT_POLL_S if watch_abort else None
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
                wait = left if wait is None else min(wait, left)
            done, _ = await asyncio.wait({task}, timeout=wait)
            if done:
                return self._outcome_of(task)
            if deadline is not None and time.monotonic() >= deadline:
                assert limit is not None
                why = f"timed out after {format_duration(limit)}"
                break
            if watch_abort and self.store.abort_requested(self.deploy_id):
                who = self.store.deploy(self.deploy_id)["abort_requested"] or "an operator"
                why = f"aborted by {who}"
                self._interrupted = "abort"
                break
            if watch_abort and self._fired is not None and self._fired[0].action == "rollback":
                why = f"rollback trigger '{self._fired[0].name}' fired"
                self._interrupted = "trigger"
                break
        self.reporter.line(f"{why}: stopping the step's work")
        task.cancel()
        bound = work.grace_s() + STOP_EXTRA_S
        done, _ = await asyncio.wait({task}, timeout=bound)
        if done and task.cancelled():
            self._event("step.stopped", f"{self._title(step)}: {why}; its work was stopped")
            return StepOutcome(False, error=f"{why}; its work was stopped")
        if done and task.exception() is None:
            # It finished as it was being stopped: its effect is whole; record it as it is.
            self._interrupted = None
            self._abort_checked = float("-inf")  # the next boundary reads the abort
            return task.result()
        detail = ""
        if done:
            exc = task.exception()
            detail = f": {exc}" if isinstance(exc, work.WorkNotStopped) else ""
            if not isinstance(exc, work.WorkNotStopped):
                self._event("step.stopped", f"{self._title(step)}: {why}; its work was stopped")
                return StepOutcome(False, error=self._mask(f"{why}; stopped with {exc!r}"))
        self._interrupted = "unconfirmed"
        msg = self._mask(
            f"{self._title(step)} {why}, and its work could not be confirmed stopped within "
            f"{bound:g}s{detail}: check that it has stopped, then resume with "
            "--retry-step, --skip-step or --rollback"
        )
        self._event("step.not_stopped", msg)
        return StepOutcome(False, error=msg)

    def _outcome_of(self, task: asyncio.Future[StepOutcome]) -> StepOutcome:
        exc = task.exception()
        if exc is None:
            return task.result()
        # a step kind's bug must not kill the deploy silently
        return StepOutcome(False, error=self._mask(f"{type(exc).__name__}: {exc}"))

    async def _verify(self, node: Node) -> DeployState | None:
        phase = self.plan.phases[node.phase]
        ref = phase.verify[node.index]
        row = self.store.step_rows(self.deploy_id).get(node.key)
        if row is not None and row["state"] == "failed":
            return await self._failure(node, row["error"] or "failed")
        self.reporter.step(f"verify: {self._text(node.title)}")
        self.store.step_started(
            self.deploy_id,
            node.key,
            title=self._text(node.title),
            kind="verify",
            step_id=None,
            attempts=1,
        )
        result = await self.run_check(ref)
        self.reporter.result(result.passed, result.message)
        data = {"status": result.status, "level": result.level, "value": _jsonable(result.value)}
        if result.passed:
            state = StepState.WARNED if result.level == "warn" else StepState.SUCCEEDED
            self.store.step_finished(
                self.deploy_id, node.key, state=state.value, output=result.message, event_data=data
            )
            if result.level == "warn":
                self._notify_rules("watch_warn", f"WARN {result.name}: {result.message}")
            return None
        self.store.step_finished(
            self.deploy_id, node.key, state="failed", error=result.message, event_data=data
        )
        if result.status == "inconclusive":
            return self._pause(node, f"verify '{result.name}' is inconclusive: {result.message}")
        return await self._failure(node, f"verify '{result.name}' failed: {result.message}")

    # --- failure --------------------------------------------------------------------------
    async def _failure(self, node: Node, error: str) -> DeployState | None:
        phase: Phase = self.plan.phases[node.phase]
        self.store.set_deploy(self.deploy_id, fault_at=now())
        self._notify_rules("failure", f"{self.deploy_id}: {self._text(node.title)} failed: {error}")
        if phase.on_failure == "continue":
            self.store.set_step_state(
                self.deploy_id, node.key, StepState.IGNORED, title=self._text(node.title)
            )
            self._event(
                "step.ignored",
                f"{self._text(node.title)} failed, continuing: {error}",
                key=node.key,
            )
            return None
        if phase.on_failure == "pause":
            return self._pause(node, f"{self._text(node.title)} failed: {error}")
        return await self._rollback(
            reason=f"{self._text(node.title)} failed: {error}", failed_phase=node.phase
        )

    def _pause(self, node: Node, reason: str, crashed: bool = False) -> DeployState:
        self._notify_rules("paused", f"{self.deploy_id} paused: {reason}")
        self._set_state(DeployState.PAUSED, reason)
        if crashed:
            self._event("step.crashed", reason, key=node.key)
        return DeployState.PAUSED

    def _pause_in_flight(self, key: str, reason: str) -> DeployState:
        """Pause a rollback on one of its actions (the rollback goes on when resumed)."""
        self._notify_rules("paused", f"{self.deploy_id} paused: {reason}")
        self._set_state(DeployState.PAUSED, reason)
        self._event("step.crashed", reason, key=key)
        return DeployState.PAUSED

    def _finish_failed(self, reason: str) -> DeployState:
        self._set_state(DeployState.FAILED, reason)
        self._release_lock()
        return DeployState.FAILED

    # --- rollback (saga) ------------------------------------------------------------------
    def _build_rollback(self, failed_phase: int) -> list[dict[str, Any]]:
        """After a failure: the failed phase, then each earlier phase that started and has
        rollback steps or compensations, newest first."""
        return self._build_rollback_items(range(failed_phase, -1, -1), first_phase=failed_phase)

    def _build_rollback_items(
        self, phases: Iterable[int], first_phase: int | None
    ) -> list[dict[str, Any]]:
        """For each of ``phases`` (in that order) that started: its ``rollback:`` steps, then
        the compensations it still owes, newest first. A phase with neither is left out,
        except ``first_phase`` (the one that failed)."""
        comps = self.store.compensations(self.deploy_id)
        started = self.store.phase_rows(self.deploy_id)
        items: list[dict[str, Any]] = []
        for p in phases:
            if p not in started:
                continue
            phase = self.plan.phases[p]
            pending = [
                c
                for c in comps
                if c["phase"] == p
                and (c["state"] == "pending" or (c["state"] == "armed" and c["partial_ok"]))
            ]
            if p != first_phase and not phase.rollback and not pending:
                continue
            for j, st in enumerate(phase.rollback):
                items.append(
                    {
                        "title": st.title(),
                        "phase": p,
                        "comp_id": None,
                        "steps": [step_spec(st)],
                        "key": f"phase/{p}/rollback/{j}",
                    }
                )
            for c in reversed(pending):
                items.append(
                    {
                        "title": c["title"],
                        "phase": p,
                        "comp_id": c["id"],
                        "steps": c["spec"]["steps"],
                        "key": c["source_key"] + "/undo",
                    }
                )
        return items

    async def _rollback(
        self,
        reason: str,
        failed_phase: int | None = None,
        final: DeployState = DeployState.ROLLED_BACK,
    ) -> DeployState:
        d = self.store.deploy(self.deploy_id)
        plan_items = d["rollback_plan"]
        if plan_items is None:
            if failed_phase is None:
                phases = self.store.phase_rows(self.deploy_id)
                failed_phase = max(phases) if phases else -1
            plan_items = self._build_rollback(failed_phase)
            self._set_state(DeployState.ROLLING_BACK, reason, rollback_plan=plan_items)
            self._notify_rules("rollback", f"{self.deploy_id} is rolling back: {reason}")
        else:
            self._set_state(DeployState.ROLLING_BACK, d["reason"] or reason)
        self.reporter.line(f"rolling back: {len(plan_items)} action(s)")
        rows = self.store.step_rows(self.deploy_id)
        all_ok = True
        restored: set[str] = set()  # backups restored by this rollback
        failed_phases: set[int] = set()
        undone: list[str] = []
        turned_on: int | None = None  # the downtime phase maintenance was turned on for
        for n, item in enumerate(plan_items):
            key = str(item.get("row") or f"rollback/{n}")
            row = rows.get(key)
            phase = item["phase"]
            if turned_on is not None and turned_on != phase:
                await self._maintenance_off_for(None, f"rollback of phase {turned_on + 1} done")
                turned_on = None
            if row is not None and row["state"] in DONE_STEP_STATES:
                restored |= _restores(item["steps"])
                continue
            if self._downtime(phase) and not self._maintenance_open():
                on = self._span_step("open", phase)
                if on is not None:  # a downtime phase is rolled back under maintenance
                    why = f"rolling back downtime phase {phase + 1}"
                    if await self._maintenance(on, why, key, phase):
                        turned_on = phase
            steps = [step_from_spec(s) for s in item["steps"]]
            ok = True
            for k, st in enumerate(steps):
                sub = f"{key}/{k}" if len(steps) > 1 else key
                srow = rows.get(sub)
                if srow is not None and srow["state"] in DONE_STEP_STATES:
                    restored |= _restores([item["steps"][k]])
                    continue
                again = _restores([item["steps"][k]]) & restored
                if again:
                    msg = f"{st.title()}: backup {', '.join(sorted(again))} already restored"
                    self.store.set_step_state(
                        self.deploy_id, sub, StepState.SKIPPED, title=st.title()
                    )
                    self._event("rollback.restore_skipped", msg, key=sub)
                    self.reporter.step(st.title(), "skipped: restored earlier in this rollback")
                    continue
                if srow is not None and srow["state"] == "running" and not _rerun_safe(st):
                    # In flight when the runner stopped, and not safe to repeat: never guess.
                    return self._pause_in_flight(
                        sub,
                        f"rollback action '{st.title()}' was in flight when the runner stopped "
                        "and is not idempotent: check whether it took effect, then resume with "
                        "--retry-step or --skip-step (the rollback then goes on)",
                    )
                if srow is not None and srow["state"] == "running":
                    self._event(
                        "step.rerun",
                        f"re-running idempotent rollback action {st.title()} after a crash",
                        key=sub,
                    )
                out = await self._execute(st, sub, item["phase"], srow, rolling_back=True)
                if self._interrupted == "unconfirmed":
                    return self._pause_in_flight(sub, out.error or "the action may still run")
                if out.ok:
                    restored |= _restores([item["steps"][k]])
                ok = ok and out.ok
            if len(steps) > 1:
                self.store.set_step_state(
                    self.deploy_id,
                    key,
                    StepState.SUCCEEDED if ok else StepState.FAILED,
                    title=item["title"],
                )
            if item["comp_id"] is not None:
                self.store.set_compensation_state(item["comp_id"], "done" if ok else "failed")
                if ok and item["key"].endswith("/undo"):
                    undone.append(item["key"][: -len("/undo")])
            if not ok:
                failed_phases.add(phase)
            all_ok = all_ok and ok
        await self._maintenance_off_for(None, "rollback finished")
        state = final if all_ok else DeployState.FAILED
        why = (
            reason if all_ok else f"{reason}; rollback incomplete: see tminus log {self.deploy_id}"
        )
        for idx, prow in self.store.phase_rows(self.deploy_id).items():
            if prow["state"] == "running":
                self.store.phase_finished(self.deploy_id, idx, "rolled_back")
        # What the rollback undid shows as rolled back, not as succeeded.
        rows = self.store.step_rows(self.deploy_id)
        rolled = sorted({int(i["phase"]) for i in plan_items} - failed_phases)
        self.store.mark_rolled_back(
            self.deploy_id,
            steps=[k for k in undone if rows.get(k, {}).get("state") == "succeeded"],
            phases=[p for p in rolled if p >= 0],
        )
        self._set_state(state, why)
        self._release_lock()
        return state

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
            return await self._rollback(reason=f"aborted by {who}", final=DeployState.ABORTED)
        await self._maintenance_off_for(None, "deploy aborted")
        self._set_state(DeployState.ABORTED, f"aborted by {who}")
        self._release_lock()
        return DeployState.ABORTED

    # --- summary --------------------------------------------------------------------------
    async def _summary(self, node: Node) -> DeployState | None:
        """At the end of the window's last phase: the success metrics without ``after`` are
        measured now; those with ``after`` are scheduled (see :mod:`tminus.engine.success`)."""
        from tminus.engine.success import base_time, metric_record, scheduled_record

        self.reporter.step("success summary")
        base = base_time(self.plan, self.store.phase_rows(self.deploy_id))
        results = []
        pending = []
        for i, m in enumerate(self.plan.success_metrics):
            if m.check is None:
                continue
            if m.after is not None and m.after.total_seconds() > 0:
                pending.append(scheduled_record(i, m, base))
                continue
            r = await self.run_check(m.check)
            results.append(metric_record(i, m, r, None))
            self.reporter.result(r.passed, f"{m.name}: {r.message}")
        self._event("summary", "success metrics", {"metrics": results, "pending": pending})
        for rec in pending:
            after = timedelta(seconds=rec["after_s"])
            msg = (
                f"{rec['name']}: to be measured at {base + after:%Y-%m-%d %H:%M:%S %Z}, "
                f"{format_duration(after)} after the window's last phase ended"
            )
            self.reporter.line(msg)
            self._event("metric.scheduled", msg, rec, key=f"metric/{rec['index']}")
        self._notify_rules("success", f"{self.deploy_id} succeeded")
        self.store.set_step_state(self.deploy_id, node.key, StepState.SUCCEEDED, title="summary")
        return None

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
        await self._maintenance_off_for(None, "the deploy succeeded", keep_ok=True)
        self._set_state(DeployState.SUCCEEDED, None)
        self._release_lock()
        return DeployState.SUCCEEDED


def _restores(specs: list[dict[str, Any]]) -> set[str]:
    """What these action specs restore (each kind says: "database <- backup" signatures)."""
    out: set[str] = set()
    for spec in specs:
        step = step_from_spec(spec)
        what = kind_of(step).restores(step)
        if what is not None:
            out.add(what)
    return out


def _span_of(spec: dict[str, Any]) -> Span | None:
    """Does the step of this recorded spec open or close a maintenance span (its kind says)?"""
    step = step_from_spec(spec)
    return kind_of(step).maintenance_span(step)


def _rerun_safe(step: StepBase) -> bool:
    """May an action that was in flight at a crash run again without asking? Yes if the plan
    says it is idempotent, or its kind is safe to re-run whatever the plan says."""
    return bool(step.idempotent) or kind_of(step).rerun_safe


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)
