"""Shared base of every plan model: strict (unknown keys are errors), with small helpers."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = ["Name", "PlanModel", "RoleName", "StrList"]


class PlanModel(BaseModel):
    """Base for plan models: unknown keys are errors and values are never coerced silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False, defer_build=True)


#: An identifier written in a plan: a target, role, check or step id.
Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", min_length=1, max_length=120),
]
RoleName = Name
StrList = Annotated[list[str], Field(default_factory=list)]
