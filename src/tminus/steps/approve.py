"""``kind: approve``: a manual judgment mid-plan; the deploy waits (exit 3) until every role
listed has approved with ``tminus approve DEPLOY --role ROLE --as NAME``."""

from __future__ import annotations

from typing import ClassVar

from tminus.plan.steps import ApproveStep
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "ApproveKind"]


class ApproveKind(StepKindBase):
    kind: ClassVar[str] = "approve"
    rerun_safe: ClassVar[bool] = True

    async def execute(self, step: ApproveStep, ctx: StepContext) -> StepOutcome:
        given = {a["role"]: a for a in ctx.approvals_for(ctx.key)}
        missing = [r for r in step.roles if r not in given]
        if missing:
            msg = step.message or step.title()
            return StepOutcome(
                False, waiting=f"{msg}: waiting for approval by {', '.join(missing)}"
            )
        who = ", ".join(f"{r} ({given[r]['person']})" for r in step.roles)
        return StepOutcome(True, f"approved by {who}", artifacts={"approved_by": who})

    def compensation(self, step: ApproveStep, ctx: StepContext) -> Compensation | None:
        return None


KIND = ApproveKind()
