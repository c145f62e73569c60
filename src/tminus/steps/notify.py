"""``kind: notify``: a message to the plan's notification channels, recorded in the outbox
and delivered by the deploy's runner (or ``tminus serve``) through the channels' notifiers."""

from __future__ import annotations

from typing import ClassVar

from tminus.plan.steps import NotifyStep
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "NotifyKind"]


class NotifyKind(StepKindBase):
    kind: ClassVar[str] = "notify"
    rerun_safe: ClassVar[bool] = True

    async def execute(self, step: NotifyStep, ctx: StepContext) -> StepOutcome:
        text = ctx.resolver.mask(ctx.resolver.resolve(step.message))
        channels = step.channels or list(ctx.plan.notifications.channels) or ["log"]
        ctx.log(f"[{step.severity}] {text}")
        if ctx.notify is not None:  # recorded in the outbox, then delivered
            await ctx.notify(step.severity, text, channels)
        else:
            ctx.emit("notify", text, {"channels": channels, "severity": step.severity})
        return StepOutcome(True, text, artifacts={"channels": channels})

    def compensation(self, step: NotifyStep, ctx: StepContext) -> Compensation | None:
        return None


KIND = NotifyKind()
