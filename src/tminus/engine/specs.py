"""Step specs as the engine records them (JSON: in compensations, in a rollback plan), and
what it asks of a recorded spec's kind: what it restores, whether it opens or closes the
maintenance span, whether it may run again after a crash. Leaf of the engine's modules."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter

from tminus.plan.steps import Step, StepBase
from tminus.steps.base import Span
from tminus.steps.registry import kind_of

__all__ = ["step_from_spec", "step_spec"]


def step_spec(step: StepBase) -> dict[str, Any]:
    return step.model_dump(mode="json", by_alias=True, exclude_none=True)


def step_from_spec(spec: dict[str, Any]) -> StepBase:
    return _step_adapter().validate_python(spec)


@functools.cache
def _step_adapter() -> TypeAdapter[StepBase]:
    adapter: TypeAdapter[StepBase] = TypeAdapter(Step)
    return adapter


def _restores(specs: list[dict[str, Any]]) -> set[str]:
    """What these action specs restore (each kind says: "database <- backup" signatures)."""
    out: set[str] = set()
    for spec in specs:
        step = step_from_spec(spec)
        what = kind_of(step).restores(step)
        if what is not None:
            out.add(what)
    return out


def _span_of(spec: dict[str, Any]) -> Span | None:
    """Does the step of this recorded spec open or close a maintenance span (its kind says)?"""
    step = step_from_spec(spec)
    return kind_of(step).maintenance_span(step)


def _rerun_safe(step: StepBase) -> bool:
    """May an action that was in flight at a crash run again without asking? Yes if the plan
    says it is idempotent, or its kind is safe to re-run whatever the plan says."""
    return bool(step.idempotent) or kind_of(step).rerun_safe


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)
