"""The registry of step kinds (a :class:`tminus.registry.Registry`): built-ins, then
third-party ones from the ``tminus.steps`` entry-point group. It never guesses: an unknown
kind is an error naming the known ones.

A third-party kind written without :class:`~tminus.steps.base.StepKindBase` gets the default
of each capability it does not declare (here, once), so the engine relies on the whole
:class:`~tminus.steps.base.StepKind` Protocol for every kind."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from tminus.errors import PlanError
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import StepBase
from tminus.registry import Registry, Unknown
from tminus.steps.base import (
    Compensation,
    Span,
    StepContext,
    StepKind,
    StepKindBase,
    StepOutcome,
)

__all__ = [
    "BUILTIN_MODULES",
    "KINDS",
    "get_kind",
    "implemented_kinds",
    "is_fleet_kind",
    "kind_of",
    "known_kind",
]

#: kind → module implementing it (imported on first use).
BUILTIN_MODULES: dict[str, str] = {
    "run": "tminus.steps.run",
    "http": "tminus.steps.http",
    "sql": "tminus.steps.sql",
    "wait": "tminus.steps.wait",
    "approve": "tminus.steps.approve",
    "maintenance": "tminus.steps.maintenance",
    "notify": "tminus.steps.notify",
    "backup": "tminus.steps.backup",
    "restore": "tminus.steps.restore",
    "verify_backup": "tminus.steps.verify_backup",
    "snapshot": "tminus.steps.snapshot",
    "migrate": "tminus.steps.migrate",
    "ssh": "tminus.steps.ssh",
    "upload": "tminus.steps.upload",
    "release": "tminus.steps.release",
    "traffic": "tminus.steps.traffic",
    "flag": "tminus.steps.flag",
    "canary": "tminus.steps.canary",
    "blue_green": "tminus.steps.blue_green",
    "kubernetes": "tminus.steps.kubernetes",
}

#: Built-in kinds, then third-party ones (entry-point group ``tminus.steps``; their plan models
#: are in ``tminus.step_models``: docs/plugins.md).
KINDS: Registry[Any] = Registry("step kind", BUILTIN_MODULES, group="tminus.steps")
#: Each kind as the engine uses it (a third-party one with the defaults it does not declare).
_cache: dict[str, StepKind] = {}

#: The capabilities a kind declares as class attributes (their defaults in StepKindBase).
_FLAGS = ("rerun_safe", "per_host", "own_timeout")


class _WithDefaults(StepKindBase):
    """A third-party kind that subclasses no :class:`StepKindBase`: its own members, and
    the defaults of the capabilities it does not declare."""

    kind: ClassVar[str] = ""

    def __init__(self, impl: Any) -> None:
        self._impl = impl

    async def execute(self, step: Any, ctx: StepContext) -> StepOutcome:
        out: StepOutcome = await self._impl.execute(step, ctx)
        return out

    def describe(self, step: Any, resolver: Resolver) -> str:
        return str(self._impl.describe(step, resolver))

    def compensation(self, step: Any, ctx: StepContext) -> Compensation | None:
        own = getattr(self._impl, "compensation", None)
        return own(step, ctx) if own is not None else None

    def preflight(self, step: Any, plan: Plan, resolver: Resolver, state_dir: Path) -> list[str]:
        own = getattr(self._impl, "preflight", None)
        return list(own(step, plan, resolver, state_dir)) if own is not None else []

    def maintenance_span(self, step: Any) -> Span | None:
        own = getattr(self._impl, "maintenance_span", None)
        return own(step) if own is not None else None

    def span_step(self, plan: Plan, steps: Sequence[StepBase], span: Span) -> StepBase | None:
        own = getattr(self._impl, "span_step", None)
        return own(plan, steps, span) if own is not None else None

    def restores(self, step: Any) -> str | None:
        own = getattr(self._impl, "restores", None)
        return own(step) if own is not None else None


def _with_defaults(impl: Any) -> StepKind:
    """``impl`` itself if it is a :class:`StepKindBase`, else ``impl`` with the defaults."""
    if isinstance(impl, StepKindBase):
        return impl  # type: ignore[return-value]  # a subclass implements execute/describe
    flags = {n: bool(getattr(impl, n)) for n in _FLAGS if hasattr(impl, n)}
    cls = type(type(impl).__name__, (_WithDefaults,), {"kind": impl.kind, **flags})
    adapted: StepKind = cls(impl)
    return adapted


def implemented_kinds() -> set[str]:
    return set(KINDS.names())


def get_kind(kind: str) -> StepKind:
    if kind in _cache:
        return _cache[kind]
    try:
        impl = _with_defaults(KINDS.get(kind))
    except Unknown as exc:
        raise PlanError(
            f"step kind '{kind}' is not implemented in this version of tminus",
            hint="implemented kinds: " + ", ".join(sorted(exc.known)),
        ) from None
    _cache[kind] = impl
    return impl


def kind_of(step: StepBase) -> StepKind:
    """The kind implementing ``step`` (its ``kind:``)."""
    return get_kind(str(getattr(step, "kind", "")))


def known_kind(kind: str) -> StepKind | None:
    """The kind named ``kind``, or None if this version of tminus does not implement it (a
    deploy recorded by a version with other kinds)."""
    try:
        return get_kind(kind)
    except PlanError:
        return None


def is_fleet_kind(kind: str) -> bool:
    """Does the kind recorded for a step run on the fleet, host by host (it declares
    ``per_host``)? A kind this version does not implement does not."""
    impl = known_kind(kind)
    return impl is not None and impl.per_host
