"""What every step has: :class:`StepBase` (id, name, owner, estimate, timeout, retries, undo)
and :class:`Retry`. ``Step`` (the union of all kinds) is handed to this module by
:mod:`tminus.plan.steps` once every kind is defined, so ``undo: list[Step]`` resolves."""

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from tminus.plan._base import Name, PlanModel
from tminus.plan.values import DurationStr

from ._base import new_list

if TYPE_CHECKING:  # the union exists once every kind is defined; plan.steps hands it over
    from tminus.plan.steps import Step

__all__ = ["Retry", "StepBase"]


class Retry(PlanModel):
    """Retries with exponential backoff: delay, delay×backoff, … capped at max_delay."""

    attempts: int = Field(1, ge=1, le=100, description="Total attempts, the first included.")
    delay: DurationStr = timedelta(seconds=1)
    backoff: float = Field(2.0, ge=1.0)
    max_delay: DurationStr = timedelta(seconds=60)

    @model_validator(mode="before")
    @classmethod
    def _int_shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"attempts": value + 1}
        return value


class StepBase(PlanModel):
    """Fields every step has."""

    id: Name | None = Field(None, description="Stable id; artifacts are read through it.")
    name: str | None = Field(None, description="What the runbook calls this task.")
    description: str | None = None
    owner: Name | None = Field(None, description="The role that performs or owns the task.")
    estimate: DurationStr | None = None
    timeout: DurationStr | None = None
    retries: Retry | None = None
    idempotent: bool = Field(
        False, description="Safe to re-run if it was in flight when the runner died."
    )
    undo: "list[Step]" = Field(
        default_factory=new_list, description="Compensation steps run if the deploy rolls back."
    )

    def title(self) -> str:
        """What reports call this step: its name, else its id, else a summary of it."""
        return self.name or self.id or self.default_title()

    def default_title(self) -> str:
        return str(getattr(self, "kind", "step"))
