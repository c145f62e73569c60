"""The traffic step kinds: traffic, flag, canary, blue_green."""

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from tminus.plan._base import Name, PlanModel
from tminus.plan._step_base import StepBase
from tminus.plan.checks import CheckRef
from tminus.plan.values import DurationStr, VarDurationStr

from ._base import new_dict, new_list

if TYPE_CHECKING:  # the union exists once every kind is defined; plan.steps hands it over
    from tminus.plan.steps import Step

__all__ = ["BlueGreenStep", "CanaryStep", "CanaryStepWeight", "FlagStep", "TrafficStep"]


_RESTORE_DOC = (
    "Written by tminus in the undo it registers, never in a plan: restore what the step with "
    "this key recorded before it changed anything."
)


class TrafficStep(StepBase):
    """Set the weights of a router's pools (in percent)."""

    kind: Literal["traffic"]
    router: Name
    weights: dict[Name, int] = Field(default_factory=new_dict)
    restore: str | None = Field(None, description=_RESTORE_DOC)

    @field_validator("weights")
    @classmethod
    def _weights_range(cls, value: dict[str, int]) -> dict[str, int]:
        for pool, w in value.items():
            if not 0 <= w <= 100:
                raise ValueError(f"weight of '{pool}' must be between 0 and 100, got {w}")
        return value

    @model_validator(mode="after")
    def _weights_or_restore(self) -> "TrafficStep":
        if not self.weights and self.restore is None:
            raise ValueError("a traffic step needs 'weights'")
        return self

    def default_title(self) -> str:
        if self.restore is not None:
            return f"Restore the traffic split of {self.router}"
        split = ", ".join(f"{p} {w}%" for p, w in self.weights.items())
        return f"Traffic on {self.router}: {split}"


class FlagStep(StepBase):
    """Set a feature flag's percentage (sticky by user key) or switch it on or off."""

    kind: Literal["flag"]
    store: Name
    flag: str
    percentage: float | None = Field(None, ge=0, le=100)
    enabled: bool | None = None
    restore: str | None = Field(None, description=_RESTORE_DOC)

    @model_validator(mode="after")
    def _something_to_set(self) -> "FlagStep":
        if self.percentage is None and self.enabled is None and self.restore is None:
            raise ValueError("a flag step needs 'percentage' or 'enabled'")
        return self

    def default_title(self) -> str:
        if self.restore is not None:
            return f"Restore flag {self.flag}"
        parts = [f"{self.percentage:g}%"] if self.percentage is not None else []
        if self.enabled is not None:
            parts.append("on" if self.enabled else "off")
        return f"Flag {self.flag}: {', '.join(parts)}"


class CanaryStepWeight(PlanModel):
    """One step of a canary: a weight held for ``pause`` or until promoted by hand."""

    weight: int = Field(ge=0, le=100)
    pause: VarDurationStr | Literal["manual"] | None = None

    @field_validator("pause", mode="before")
    @classmethod
    def _manual(cls, value: Any) -> Any:
        return "manual" if value == "manual" else value


class CanaryStep(StepBase):
    """Shift traffic to a canary pool step by step while analysis runs."""

    kind: Literal["canary"]
    router: Name
    stable: Name
    canary: Name
    steps: list[CanaryStepWeight] = Field(min_length=1)
    analysis: list[CheckRef] = Field(default_factory=new_list)
    promote: bool = Field(
        True,
        description="Send all traffic to the canary after the last step; false holds the last "
        "weight so that a later phase continues the rollout (5% → 25% → 100% over days).",
    )


class BlueGreenStep(StepBase):
    """Deploy to the idle pool, check it, switch; keep the old pool for instant switch-back."""

    kind: Literal["blue_green"]
    router: Name
    active: Name
    idle: Name
    deploy: "list[Step]" = Field(default_factory=new_list)
    preview: list[CheckRef] = Field(default_factory=new_list)
    rollback_window: DurationStr | None = None
