"""Shared base of every plan model: strict (unknown keys are errors), with small helpers."""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from typing_extensions import TypeAliasType

__all__ = ["Name", "PlanModel", "RoleName", "StrList", "new_dict", "new_list"]


class PlanModel(BaseModel):
    """Base for plan models: unknown keys are errors and values are never coerced silently."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False, defer_build=True)


def new_list() -> list[Any]:
    """``default_factory`` for an empty list.

    A Python function, not the builtin ``list``: pydantic inspects every factory's signature,
    which costs about 130 µs for a builtin (its text signature is parsed) and 9 µs for this,
    and the plan model has about 90 of them (#14, start-up of ``tminus check``).
    """
    return []


def new_dict() -> dict[Any, Any]:
    """``default_factory`` for an empty dict (see :func:`new_list`)."""
    return {}


#: An identifier written in a plan: a target, role, check or step id.
# A named alias (``TypeAliasType``): pydantic builds its validator once and refers to it from
# every field that uses it, instead of once per field (#14: ``tminus check`` start-up).
Name = TypeAliasType(
    "Name",
    Annotated[
        str,
        StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", min_length=1, max_length=120),
    ],
)
RoleName = Name
StrList = Annotated[list[str], Field(default_factory=new_list)]
