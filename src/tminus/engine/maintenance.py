"""The guarantee that maintenance goes off: the steps that open or close the maintenance span,
run by the engine outside the plan's steps (at a phase's end, when the deploy stops, around a
downtime phase's rollback), and such a step made from the plan's own settings."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tminus.engine.specs import _span_of, step_from_spec
from tminus.plan.steps import StepBase
from tminus.steps.base import Span, StepKind
from tminus.steps.registry import get_kind, implemented_kinds, kind_of

if TYPE_CHECKING:
    from tminus.engine.engine import Engine

__all__ = [
    "downtime",
    "maintenance",
    "maintenance_off_for",
    "maintenance_open",
    "span_end",
    "span_step",
]


async def maintenance_off_for(
    engine: Engine, phase: int | None, why: str, *, keep_ok: bool = False
) -> None:
    """The guarantee: maintenance goes off. At the end of ``phase``: what that phase (or
    a span ``until:`` it) turned on. With ``phase`` None (the deploy stops: rolled back,
    failed, aborted, succeeded, waiting for a delayed phase): everything still on,
    including maintenance turned on by a rollback step, except, with ``keep_ok`` (it
    succeeded), what a step turned on with ``keep: true``."""
    if not maintenance_open(engine):
        return
    kept = False
    for comp in engine.store.compensations(engine.deploy_id):
        if comp["state"] not in ("armed", "pending"):
            continue
        for s in comp["spec"].get("steps", []):
            if _span_of(s) != "close":
                continue
            if phase is not None and (s.get("keep") or span_end(engine, s, comp["phase"]) > phase):
                continue  # a span (on until a later phase ends), or kept to the end
            if keep_ok and s.get("keep"):
                kept = True
                continue
            if await maintenance(engine, step_from_spec(s), why, comp["source_key"]):
                engine.store.set_compensation_state(comp["id"], "done")
    if phase is None and not kept and maintenance_open(engine):
        # turned on with no compensation (by a rollback step): off with the same settings
        off = span_step(engine, "close")
        if off is not None:
            await maintenance(engine, off, why, "maintenance")
        else:
            engine._event("maintenance.left_on", "maintenance is on and no step can turn it off")


def maintenance_open(engine: Engine) -> bool:
    return any(w["off_at"] is None for w in engine.store.maintenance_windows(engine.deploy_id))


def span_end(engine: Engine, spec: dict[str, Any], phase: int) -> int:
    """The phase at whose end maintenance turned on in ``phase`` goes off."""
    until = spec.get("until")
    end = engine.plan.phase_index(until) if until is not None else None
    return phase if end is None else max(end, phase)


def span_step(engine: Engine, span: Span, phase: int | None = None) -> StepBase | None:
    """A step that opens or closes the maintenance span with the plan's own settings (the
    phase's own span step's, if it has one, else the plan's ``maintenance:``, else any
    span step's settings): made by the kind of the phase's (or plan's) span steps, else
    by the first kind that makes one from the plan's settings alone."""
    phases = [phase] if phase is not None else range(len(engine.plan.phases))
    steps = [
        s for p in phases for s in (*engine.plan.phases[p].steps, *engine.plan.phases[p].rollback)
    ]
    spanning = [s for s in steps if kind_of(s).maintenance_span(s) is not None]
    for kind in _span_kinds(spanning):
        made = kind.span_step(engine.plan, spanning, span)
        if made is not None:
            return made
    return None


def _span_kinds(spanning: Sequence[StepBase]) -> Iterator[StepKind]:
    """The kinds of ``spanning``, then (imported only if asked) every other kind."""
    seen: set[str] = set()
    for s in spanning:
        kind = kind_of(s)
        if kind.kind not in seen:
            seen.add(kind.kind)
            yield kind
    for name in sorted(implemented_kinds() - seen):
        yield get_kind(name)


async def maintenance(engine: Engine, step: StepBase, why: str, key: str, phase: int = -1) -> bool:
    """Run ``step``, which opens or closes the maintenance span, outside the plan's steps
    (the engine's guarantee that maintenance goes off; a downtime phase's rollback)."""
    kind = kind_of(step)
    span = kind.maintenance_span(step)
    assert span is not None
    engine.reporter.step(f"Maintenance mode {'on' if span == 'open' else 'off'}", why)
    out = await kind.execute(step, engine._ctx(key, phase))
    engine.reporter.result(out.ok, out.output or out.error or "")
    if out.ok and span == "close":
        engine.store.maintenance_off(engine.deploy_id)
    elif out.ok:
        engine.store.maintenance_on(engine.deploy_id, phase)
    return out.ok


def downtime(engine: Engine, phase: int) -> bool:
    return 0 <= phase < len(engine.plan.phases) and engine.plan.phases[phase].downtime
