"""``kind: notify``: a message to the plan's notification channels (stdout and the log for
now; the notifier plug-ins arrive with the notifications work)."""

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
        ctx.emit("notify", text, {"channels": channels, "severity": step.severity})
        return StepOutcome(True, text, artifacts={"channels": channels})

    def compensation(self, step: NotifyStep, ctx: StepContext) -> Compensation | None:
        return None


KIND = NotifyKind()
