"""``kind: canary``: shift traffic to a canary pool weight by weight while analysis runs.

For each ramp step the whole split ``{stable: 100-w, canary: w}`` is applied in **one** router
call, then the weight is held: for ``pause`` (a duration), until a person promotes it
(``pause: manual``), or not at all (no ``pause``). The step's ``analysis`` checks run for the
whole hold (:func:`tminus.analysis.runner.run_analysis`):

- **CRITICAL / failed**: traffic goes back to stable at once, in one router call
  (``{stable: 100, canary: 0}``); the step records when the fault was detected and when the
  traffic moved (the router's word for it, HAProxy's runtime call answered before its
  config file is checked and written; else the router call's return) (artifacts
  ``fault_detected_at``, ``traffic_restored_at``,
  ``restore_ms``, and a ``canary.traffic_restored`` event), then fails, so the engine runs
  the phase's rollback.
- **inconclusive or error** (no data, the metric source unreachable): the weight is held and
  the deploy **pauses** (missing data never promotes, and is not evidence against the
  canary). ``tminus resume`` runs the analysis again at the same weight; ``--rollback`` rolls
  back; ``--skip-step`` leaves the weight where it is.
- **WARN**: a notification; the ramp goes on.

A promotion is an approval given while the weight is held (``tminus approve DEPLOY --role
ROLE --as NAME``, any role of the plan): it ends the hold, timed or manual, and the ramp goes
on. The analysis keeps running until then, so a manual hold is still watched. An abort
(``tminus abort DEPLOY``) ends the hold too, leaving the weight where it is.

Progress (the ramp step reached, promotions used) is kept in ``STATE_DIR/progress/``, so a
step that runs again (``tminus resume`` after a pause, or ``--retry-step`` after a crash)
continues at the weight it had reached instead of starting the ramp over. After a failure the
progress is cleared: a retry starts the ramp from its first weight.

Before its first router change the step records the router as it was (the split, the cookie
route, a flags router's snapshot: :func:`tminus.steps.traffic.record_router`, written once, in
``STATE_DIR/undo/``). The built-in compensation, armed before the step runs and ``partial_ok``
(part of the ramp may stand even if the step failed), puts exactly that back.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Literal

from tminus.analysis.runner import AnalysisResult, run_analysis
from tminus.plan.checks import CheckBase
from tminus.plan.durations import resolve_durations
from tminus.plan.interpolate import ResolveError
from tminus.plan.steps import CanaryStep
from tminus.plan.values import format_duration
from tminus.sources.base import CheckResult
from tminus.steps._progressive import Progress, Rollout, resolve_checks, router_cookie
from tminus.steps._progressive import start as start_rollout
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome
from tminus.steps.traffic import restore_compensation

__all__ = [
    "KIND",
    "CanaryKind",
    "Hold",
    "Progress",
    "hold",
    "resolve_checks",
    "router_cookie",
]

#: How often (seconds) a hold looks for a promotion or an abort request in the store.
POLL_S = 0.5


# --- holding a weight ----------------------------------------------------------------------


@dataclass
class Hold:
    """How a hold ended: the analysis' verdict (None when there were no checks), who
    promoted it (None if it ran its course), or an abort request."""

    result: AnalysisResult | None
    promoted_by: str | None = None
    aborted: bool = False
    started: float = 0.0
    ended: float = 0.0

    @property
    def verdict(self) -> Literal["pass", "fail", "pause"]:
        """fail: roll back; pause: no verdict (missing data or an error), or aborted."""
        if self.aborted:
            return "pause"
        r = self.result
        if r is None or r.status == "successful":
            return "pass"
        if r.status == "failed":
            return "fail"
        # inconclusive or error: no evidence either way. A person's promotion overrides
        # missing data (it is recorded), never a failure.
        return "pass" if self.promoted_by else "pause"


class Promotions:
    """Approvals given after the step started are promotions, each used once.

    ``tminus approve`` records an approval for the waiting step if there is one (a paused
    canary), else for the deploy's ``approvals`` gate (a canary holding a weight right now).
    """

    def __init__(self, ctx: StepContext, progress: Progress) -> None:
        self.ctx = ctx
        self.progress = progress
        self.before = {int(a["id"]) for a in ctx.approvals_for("approvals")}

    def take(self) -> str | None:
        used = self.progress.consumed
        rows = self.ctx.approvals_for(self.ctx.key) + self.ctx.approvals_for("approvals")
        for a in rows:
            aid = int(a["id"])
            if aid in self.before or aid in used:
                continue
            self.progress.save(consumed=sorted(used | {aid}))
            return f"{a['role']} ({a['person']})"
        return None


def _abort_requested(ctx: StepContext) -> bool:
    check: Callable[[], bool] | None = ctx.services.abort_requested
    return bool(check()) if check is not None else False


async def _warn(ctx: StepContext, result: CheckResult) -> None:
    text = ctx.resolver.mask(f"WARN {result.name}: {result.message}")
    ctx.log(text)
    ctx.emit("analysis.warn", text, {"check": result.name, "value": _jsonable(result.value)})
    if ctx.notify is not None:
        await ctx.notify("warning", text, [])


async def hold(
    ctx: StepContext,
    checks: Sequence[CheckBase],
    pause: timedelta | Literal["manual"] | None,
    promotions: Promotions | None,
    weight: int | None = None,
) -> Hold:
    """Hold for ``pause`` (a duration, ``manual``: until promoted, None: one round of the
    checks) while ``checks`` are analysed. A promotion or an abort ends the hold early."""
    run_check: Callable[[CheckBase], Awaitable[CheckResult]] = ctx.services.run_check

    stop = asyncio.Event()
    out = Hold(None, started=time.time())
    if promotions is not None:
        out.promoted_by = promotions.take()  # given while the deploy was paused here
        if out.promoted_by and not checks:
            out.ended = time.time()
            return out

    async def watch() -> None:
        while not stop.is_set():
            if promotions is not None and out.promoted_by is None:
                out.promoted_by = promotions.take()
            if out.promoted_by is not None:
                break
            if _abort_requested(ctx):
                out.aborted = True
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
        stop.set()

    # manual: measure until promoted (a check's `count` may end its measurements sooner)
    duration = math.inf if pause == "manual" else (0.0 if pause is None else pause.total_seconds())
    deadline = time.monotonic() + duration
    watcher = asyncio.create_task(watch())
    try:
        if checks:
            out.result = await run_analysis(
                checks,
                run_check,
                duration=duration,
                stop=stop,
                on_warn=lambda r: _warn(ctx, r),
                on_measure=lambda m: _measured(ctx, m, weight),
            )
            if out.result.status != "failed":  # a failed one is told after the restore
                _tell_decided(ctx, out.result, weight)
        # The weight is held for the whole pause even when every check is done early, and
        # a manual hold always waits for its promotion.
        if out.result is None or out.result.status == "successful":
            left = deadline - time.monotonic()
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), None if math.isinf(left) else left)
    finally:
        stop.set()
        await watcher
    out.ended = time.time()
    return out


def _measured(ctx: StepContext, m: dict[str, Any], weight: int | None) -> None:
    """One analysis measurement, as an event (``analysis.measurement``): the dashboard draws
    the canary's measurements live from these. Masked like every event."""
    value = m.get("value")
    data = {
        "check": m["check"],
        "status": m["status"],
        "level": m["level"],
        "value": value if isinstance(value, int | float) else _jsonable(value),
        "weight": weight,
        "at": m["at"],
    }
    shown = f" = {value:g}" if isinstance(value, int | float) else ""
    ctx.emit(
        "analysis.measurement",
        ctx.resolver.mask(f"{m['check']}{shown}: {m['status']} ({m['level']}) {m['message']}"),
        ctx.resolver.masker.mask_data(data),
    )


def _tell_decided(ctx: StepContext, result: AnalysisResult, weight: int | None) -> None:
    """The measurement that ended the analysis (``run_analysis`` leaves it to us)."""
    for m in result.measurements:
        if m.get("decided"):
            _measured(ctx, m, weight)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _pause_text(pause: timedelta | Literal["manual"] | None) -> str:
    if pause == "manual":
        return "until promoted"
    if pause is None:
        return "no hold"
    return f"hold {format_duration(pause)}"


# --- the step kind -------------------------------------------------------------------------


class CanaryKind(StepKindBase):
    kind: ClassVar[str] = "canary"

    async def execute(self, step: CanaryStep, ctx: StepContext) -> StepOutcome:
        try:  # `pause: ${hold}`: durations given by variables are read now
            step = resolve_durations(step, ctx.resolver)
        except (ResolveError, ValueError) as exc:
            return StepOutcome(False, error=ctx.resolver.mask(str(exc)))
        ro = start_rollout(ctx, step.router, step.analysis)
        if isinstance(ro, StepOutcome):
            return ro
        promotions = Promotions(ctx, ro.progress)
        start = int(ro.progress.data.get("index", 0))
        reached: list[dict[str, Any]] = list(ro.progress.data.get("reached", []))
        artifacts: dict[str, Any] = {"router": step.router, "reached": reached}

        if start:
            ro.say(f"continuing the ramp at step {start + 1}/{len(step.steps)}")
        await ro.record()  # what the compensation puts back, before the first change
        if ro.cookie:
            await ro.router.set_cookie_route(step.canary)
        for i in range(start, len(step.steps)):
            ramp = step.steps[i]
            w = ramp.weight
            ro.progress.save(index=i, reached=reached)
            await ro.router.set_weights({step.stable: 100 - w, step.canary: w})
            at = time.time()
            reached.append({"weight": w, "step": i + 1, "at": at})
            ro.progress.save(reached=reached)
            artifacts["weight"] = w
            ctx.emit(
                "canary.weight",
                f"{step.canary} at {w}% ({step.stable} {100 - w}%)",
                {"weight": w, "step": i + 1, "of": len(step.steps), "at": at},
            )
            ro.say(
                f"{step.canary} at {w}%: {_pause_text(ramp.pause)}"
                + (f", analysis: {len(ro.checks)} check(s)" if ro.checks else "")
                + (
                    f"; promote with: tminus approve {ctx.deploy_id} --role ROLE --as NAME"
                    if ramp.pause is not None
                    else ""
                )
            )
            h = await hold(ctx, ro.checks, ramp.pause, promotions, w)
            if h.result is not None:
                artifacts.setdefault("analysis", []).append(
                    {
                        "weight": w,
                        "status": h.result.status,
                        "level": h.result.level,
                        "message": ctx.resolver.mask(h.result.message),
                    }
                )
            if h.promoted_by:
                ctx.emit(
                    "canary.promoted",
                    f"{h.promoted_by} promoted {step.canary} past {w}%",
                    {"weight": w, "by": h.promoted_by},
                )
                ro.say(f"promoted past {w}% by {h.promoted_by}")
            verdict = h.verdict
            if verdict == "fail":
                assert h.result is not None
                return await self._restore(step, ctx, ro, h.result, w)
            if verdict == "pause":
                why = (
                    "abort requested"
                    if h.aborted
                    else f"analysis {h.result.status if h.result else 'stopped'}"
                    + (f": {h.result.message}" if h.result else "")
                )
                msg = ctx.resolver.mask(
                    f"{why}; {step.canary} holds {w}%: resume to analyse again, "
                    f"--rollback to send traffic back to {step.stable}, --skip-step to go on"
                )
                ctx.emit("canary.paused", msg, {"weight": w})
                return StepOutcome(False, ro.output, artifacts=artifacts, pause=msg)
        last = step.steps[-1].weight
        if step.promote:
            if last != 100:
                await ro.router.set_weights({step.stable: 0, step.canary: 100})
                reached.append({"weight": 100, "step": "promote", "at": time.time()})
            if ro.cookie:
                await ro.router.set_cookie_route(None)
            artifacts["weight"] = 100
            ctx.emit("canary.promoted_full", f"{step.canary} serves 100%", {"weight": 100})
            ro.say(f"promoted: {step.canary} serves 100%")
        else:
            ro.say(f"{step.canary} holds {last}% for a later phase (promote: false)")
        actual = await ro.router.get_weights()
        artifacts["weights"] = actual
        ro.progress.clear("consumed")
        return StepOutcome(True, ro.output, artifacts=artifacts)

    async def _restore(
        self,
        step: CanaryStep,
        ctx: StepContext,
        ro: Rollout,
        result: AnalysisResult,
        weight: int,
    ) -> StepOutcome:
        """CRITICAL: all traffic back to stable in one router call, then record the times."""
        detected = result.detected_at or time.time()
        error: str | None = None
        moved: float | None = None
        try:
            moved = await ro.router.set_weights({step.stable: 100, step.canary: 0}, urgent=True)
        except Exception as exc:  # still record what happened; the compensation retries
            error = f"{type(exc).__name__}: {exc}"
        # when the traffic moved (HAProxy: its runtime call, before the config is persisted)
        restored = moved or time.time()
        _tell_decided(ctx, result, weight)
        if ro.cookie and error is None:
            with contextlib.suppress(Exception):
                await ro.router.set_cookie_route(None)
        reached = list(ro.progress.data.get("reached", []))  # kept in the artifacts
        ro.progress.clear("consumed")
        ms = (restored - detected) * 1000
        data = {
            "weight": weight,
            "fault_detected_at": detected,
            "traffic_restored_at": None if error else restored,
            "restore_ms": None if error else round(ms, 1),
            "error": error,
        }
        message = ctx.resolver.mask(result.message)
        if error is None:
            text = (
                f"analysis failed at {weight}%: {message}; traffic back to {step.stable} "
                f"{ms:.0f} ms after detection"
            )
            ctx.emit("canary.traffic_restored", text, data)
        else:
            text = f"analysis failed at {weight}%: {message}; traffic NOT restored: {error}"
            ctx.emit("canary.restore_failed", text, data)
        ro.say(text)
        artifacts = {
            **data,  # first: its "weight" (the one it failed at) is not the weight it holds now
            "router": step.router,
            "weight": 0 if error is None else weight,
            "failed_at_weight": weight,
            "reached": reached,
            "analysis": {"status": result.status, "level": result.level, "message": message},
            "measurements": result.measurements[-20:],
        }
        return StepOutcome(False, ro.output, text, ctx.resolver.masker.mask_data(artifacts))

    def compensation(self, step: CanaryStep, ctx: StepContext) -> Compensation | None:
        return restore_compensation(
            "traffic",
            ctx.key,
            f"Router {step.router} back as it was before the canary",
            router=step.router,
        )


KIND = CanaryKind()
