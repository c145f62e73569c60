"""``kind: blue_green``: deploy to the idle pool, check it, switch all traffic in one call.

1. The ``deploy:`` steps run, in order (each with its own ``retries`` and ``timeout``), while
   the active pool serves every request. A failure stops here: nothing was switched.
2. The ``preview:`` checks run against the idle pool (if the router declares a canary
   ``cookie``, requests carrying it are routed to the idle pool for the preview). A failed
   check stops here; an inconclusive one pauses the deploy. Either way nothing was switched.
3. The switch: ``{active: 0, idle: 100}`` in **one** router call, read back from the router.
   The switch time is recorded (artifact ``switched_at``, event ``blue_green.switched``).

The old pool is kept as it is (tminus never tears it down), so switching back is one router
call: that is the step's built-in compensation (``partial_ok``), run by the rollback of this
phase or of any later one. It puts back the router exactly as the step recorded it before its
first change (split and cookie route, :func:`tminus.steps.traffic.record_router`).
``rollback_window`` says how long the old pool must stay intact;
the step records its end (artifact ``rollback_until``) for the runbook, the log and the
operator. Decommissioning the old pool is a later step of the plan, after the window.

Progress (deploy steps done, switched) is kept in ``STATE_DIR/progress/``, so a step that
runs again after a pause continues where it stopped instead of deploying again. The deploy
steps' own ``undo:`` is not armed: the idle pool serves nothing until the switch, and the
switch-back is the undo. Put an ``undo:`` on the blue_green step to revert the idle pool too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, ClassVar

from tminus.plan.steps import BlueGreenStep, StepBase
from tminus.plan.values import format_duration
from tminus.sources.base import CheckResult
from tminus.steps._progressive import start as start_rollout
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome
from tminus.steps.traffic import restore_compensation

__all__ = ["KIND", "BlueGreenKind", "run_substep"]


async def run_substep(step: StepBase, ctx: StepContext) -> StepOutcome:
    """Run a nested step with its retries (backoff) and timeout, as the engine would."""
    from tminus.steps.registry import get_kind

    kind_name = str(getattr(step, "kind", ""))
    kind = get_kind(kind_name)
    ctx.log(f"  {step.title()}: {ctx.resolver.mask(kind.describe(step, ctx.resolver))}")
    total = step.retries.attempts if step.retries else 1
    delay = step.retries.delay.total_seconds() if step.retries else 0.0
    out = StepOutcome(False, error="not run")
    for attempt in range(1, total + 1):
        try:
            if step.timeout is not None and kind_name != "run":
                out = await asyncio.wait_for(kind.execute(step, ctx), step.timeout.total_seconds())
            else:
                out = await kind.execute(step, ctx)
        except TimeoutError:
            out = StepOutcome(False, error=f"timed out after {format_duration(step.timeout)}")
        except Exception as exc:  # a kind's bug must not kill the deploy silently
            out = StepOutcome(False, error=ctx.resolver.mask(f"{type(exc).__name__}: {exc}"))
        if out.ok or out.waiting or out.pause or attempt == total:
            return out
        ctx.log(f"  {out.error} — retry {attempt}/{total - 1} in {delay:g}s")
        await asyncio.sleep(delay)
        if step.retries is not None:
            delay = min(delay * step.retries.backoff, step.retries.max_delay.total_seconds())
    return out


class BlueGreenKind(StepKindBase):
    kind: ClassVar[str] = "blue_green"

    async def execute(self, step: BlueGreenStep, ctx: StepContext) -> StepOutcome:
        ro = start_rollout(ctx, step.router, step.preview)
        if isinstance(ro, StepOutcome):
            return ro
        artifacts: dict[str, Any] = {"router": step.router, "active": step.active}

        # 1. deploy to the idle pool
        done = int(ro.progress.data.get("deployed", 0))
        for i in range(done, len(step.deploy)):
            sub = step.deploy[i]
            out = await run_substep(sub, ctx)
            if out.waiting or out.pause:
                return out
            if not out.ok:
                err = f"deploy to {step.idle} failed at '{sub.title()}': {out.error}"
                ro.say(f"{err}; traffic stays on {step.active}")
                return StepOutcome(False, ro.output, err, artifacts)
            artifacts.update({f"deploy.{k}": v for k, v in out.artifacts.items()})
            ro.progress.save(deployed=i + 1)
            ro.say(f"deployed to {step.idle}: {sub.title()}")

        await ro.record()  # what the switch-back restores, before the first change

        # 2. preview the idle pool
        if ro.checks:
            if ro.cookie:
                await ro.router.set_cookie_route(step.idle)
            run_check = ctx.services.run_check
            results: list[CheckResult] = await asyncio.gather(*(run_check(c) for c in ro.checks))
            artifacts["preview"] = [
                {"check": r.name, "status": r.status, "level": r.level, "message": r.message}
                for r in results
            ]
            for r in results:
                ro.say(f"preview {r.name}: {r.status} ({r.message})")
                if r.passed and r.level == "warn":
                    text = ctx.resolver.mask(f"WARN {r.name}: {r.message}")
                    ctx.emit("analysis.warn", text, {"check": r.name})
                    if ctx.notify is not None:
                        await ctx.notify("warning", text, [])
            bad = [r for r in results if r.status == "failed"]
            unsure = [r for r in results if r.status in ("inconclusive", "error")]
            if bad or unsure:
                if ro.cookie:
                    with contextlib.suppress(Exception):
                        await ro.router.set_cookie_route(None)
                shown = "; ".join(f"{r.name}: {r.message}" for r in (bad or unsure))
                if bad:
                    err = f"preview of {step.idle} failed ({shown}); not switched"
                    return StepOutcome(False, ro.output, err, artifacts)
                msg = (
                    f"preview of {step.idle} has no verdict ({shown}); not switched: resume "
                    "to check again, --rollback to give up"
                )
                return StepOutcome(False, ro.output, artifacts=artifacts, pause=msg)

        # 3. switch, in one router call
        before = await ro.router.get_weights()
        t0 = time.time()
        await ro.router.set_weights({step.active: 0, step.idle: 100})
        switched = time.time()
        ro.progress.save(switched=switched)
        if ro.cookie and ro.checks:
            await ro.router.set_cookie_route(None)
        after = await ro.router.get_weights()
        if after.get(step.idle) != 100:
            await ro.router.set_weights(before, urgent=True)
            err = f"the router reports {after} after the switch, not 100% on {step.idle}"
            return StepOutcome(False, ro.output, err, artifacts)
        window = step.rollback_window
        until = switched + window.total_seconds() if window else None
        artifacts.update(
            {
                "weights_before": before,
                "weights": after,
                "switched_at": switched,
                "switch_ms": round((switched - t0) * 1000, 1),
                "rollback_until": until,
            }
        )
        keep = (
            f"; {step.active} is kept for {format_duration(window)} (switch back: one router call)"
            if window
            else ""
        )
        text = f"switched {step.active} → {step.idle} in {(switched - t0) * 1000:.0f} ms{keep}"
        ctx.emit(
            "blue_green.switched",
            text,
            {"from": step.active, "to": step.idle, "at": switched, "rollback_until": until},
        )
        ro.say(text)
        ro.progress.clear()
        return StepOutcome(True, ro.output, artifacts=artifacts)

    def compensation(self, step: BlueGreenStep, ctx: StepContext) -> Compensation | None:
        return restore_compensation(
            "traffic", ctx.key, f"Switch back to {step.active}", router=step.router
        )


KIND = BlueGreenKind()
