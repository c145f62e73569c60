"""``kind: wait``: a fixed time, or until a check passes (polled every ``interval``)."""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from tminus.plan.durations import resolve_durations
from tminus.plan.interpolate import ResolveError
from tminus.plan.steps import WaitStep
from tminus.plan.values import ValueError_, format_duration
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "WaitKind"]


class WaitKind(StepKindBase):
    kind: ClassVar[str] = "wait"
    rerun_safe: ClassVar[bool] = True

    async def execute(self, step: WaitStep, ctx: StepContext) -> StepOutcome:
        try:  # `duration: ${d}` is resolved now
            step = resolve_durations(step, ctx.resolver)
        except (ResolveError, ValueError_) as exc:
            return StepOutcome(False, error=ctx.resolver.mask(str(exc)))
        if step.until is None:
            assert step.duration is not None
            await asyncio.sleep(step.duration.total_seconds())
            return StepOutcome(True, f"waited {format_duration(step.duration)}")
        run_check = ctx.services.run_check
        limit = step.timeout or step.duration
        deadline = time.monotonic() + (limit.total_seconds() if limit else 600.0)
        interval = step.interval.total_seconds() if step.interval else 5.0
        last = ""
        while True:
            result = await run_check(step.until)
            last = result.message
            if result.passed:
                return StepOutcome(True, f"{result.name}: {last}")
            if time.monotonic() + interval > deadline:
                return StepOutcome(False, last, f"check did not pass in time: {last}")
            await asyncio.sleep(interval)

    def compensation(self, step: WaitStep, ctx: StepContext) -> Compensation | None:
        return None


KIND = WaitKind()
