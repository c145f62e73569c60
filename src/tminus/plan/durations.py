"""``${…}`` durations of a step (a canary step's ``pause``), resolved when the step runs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tminus.plan.interpolate import Resolver
from tminus.plan.steps import StepBase
from tminus.plan.values import DeferredDuration, resolve_duration

__all__ = ["resolve_durations"]


def resolve_durations(model: Any, resolver: Resolver, where: str = "") -> Any:
    """``model`` (a step with its nested models and lists, but not the steps nested in it,
    resolved when they run) with every ``${…}`` duration (:class:`DeferredDuration`)
    resolved; the same object when it has none. A value that does not resolve, or is not a
    duration, raises ValueError naming the field."""
    if isinstance(model, DeferredDuration):
        return resolve_duration(model, resolver.resolve, where.rsplit(".", 1)[-1] or "duration")
    if isinstance(model, list):
        items = [resolve_durations(v, resolver, f"{where}[{i}]") for i, v in enumerate(model)]
        return model if all(a is b for a, b in zip(items, model, strict=True)) else items
    if isinstance(model, BaseModel) and not (where and isinstance(model, StepBase)):
        update = {}
        for name in type(model).model_fields:
            value = getattr(model, name)
            new = resolve_durations(value, resolver, f"{where}.{name}" if where else name)
            if new is not value:
                update[name] = new
        return model.model_copy(update=update) if update else model
    return model
