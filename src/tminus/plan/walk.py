"""Walk a plan's steps and checks with their YAML paths and execution positions.

A position orders steps as the engine runs them: phase by phase, each phase's ``steps`` first
(section 0), then its ``verify`` checks (section 1), then what runs on rollback (section 2:
``rollback`` steps and every step's ``undo``). Operations have phase index -1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tminus.plan.checks import CheckBase, CheckUse
from tminus.plan.model import Plan
from tminus.plan.problems import Loc
from tminus.plan.steps import BackupStep, BlueGreenStep, ReleaseStep, SshStep, StepBase

__all__ = [
    "CheckSite",
    "Position",
    "StepSite",
    "backup_dests",
    "iter_check_sites",
    "iter_steps",
    "resolve_check",
]

STEPS, VERIFY, ROLLBACK = 0, 1, 2


@dataclass(frozen=True, order=True)
class Position:
    phase: int
    section: int
    index: int

    def can_see(self, earlier: Position) -> bool:
        """True if a step at ``earlier`` has run (or may have run) before this position."""
        if earlier.phase < 0 or self.phase < 0:
            return True
        if earlier.section == ROLLBACK:
            return False
        if earlier.phase != self.phase:
            return earlier.phase < self.phase
        if self.section > earlier.section:
            return True
        return earlier.index < self.index


@dataclass(frozen=True)
class StepSite:
    path: Loc
    step: StepBase
    position: Position


@dataclass(frozen=True)
class CheckSite:
    path: Loc
    check: CheckBase | CheckUse
    position: Position


def _nested(step: StepBase, path: Loc, pos: Position) -> Iterator[StepSite]:
    undo_pos = Position(pos.phase, ROLLBACK, pos.index)
    for k, u in enumerate(step.undo):
        yield from _walk_step(u, (*path, "undo", k), undo_pos)
    if isinstance(step, (SshStep, ReleaseStep)):
        for hook in ("before_batch", "after_batch"):
            for k, h in enumerate(getattr(step, hook)):
                yield from _walk_step(h, (*path, hook, k), pos)
    if isinstance(step, BlueGreenStep):
        for k, d in enumerate(step.deploy):
            yield from _walk_step(d, (*path, "deploy", k), pos)


def _walk_step(step: StepBase, path: Loc, pos: Position) -> Iterator[StepSite]:
    yield StepSite(path, step, pos)
    yield from _nested(step, path, pos)


def iter_steps(plan: Plan, *, operations: bool = True) -> Iterator[StepSite]:
    """Every step of the plan, nested ones included, in execution order."""
    for i, phase in enumerate(plan.phases):
        for j, step in enumerate(phase.steps):
            yield from _walk_step(step, ("phases", i, "steps", j), Position(i, STEPS, j))
        for j, step in enumerate(phase.rollback):
            yield from _walk_step(step, ("phases", i, "rollback", j), Position(i, ROLLBACK, j))
    if operations:
        for name, op in plan.operations.items():
            for j, step in enumerate(op.steps):
                yield from _walk_step(step, ("operations", name, "steps", j), Position(-1, 0, j))


def iter_check_sites(plan: Plan) -> Iterator[CheckSite]:
    """Every place a check is used or declared, with its position."""
    anywhere = Position(-1, 0, 0)
    for name, check in plan.checks.items():
        yield CheckSite(("checks", name), check, anywhere)
    for i, item in enumerate(plan.checklist):
        if item.check is not None:
            yield CheckSite(("checklist", i, "check"), item.check, Position(-1, 0, 0))
    for i, phase in enumerate(plan.phases):
        for j, c in enumerate(phase.verify):
            yield CheckSite(("phases", i, "verify", j), c, Position(i, VERIFY, j))
    for site in iter_steps(plan):
        step = site.step
        fields = type(step).model_fields  # (a missing attribute of a model costs an exception)
        for field in ("until", "analysis", "preview"):
            value = getattr(step, field) if field in fields else None
            if value is None:
                continue
            items = value if isinstance(value, list) else [value]
            for k, c in enumerate(items):
                path = (*site.path, field, k) if isinstance(value, list) else (*site.path, field)
                yield CheckSite(path, c, site.position)
    end = Position(len(plan.phases), 0, 0)
    for i, m in enumerate(plan.success_metrics):
        if m.check is not None:
            yield CheckSite(("success_metrics", i, "check"), m.check, end)
    if plan.watch:
        for i, period in enumerate(plan.watch.schedule):
            for j, c in enumerate(period.checks):
                yield CheckSite(("watch", "schedule", i, "checks", j), c, end)
    for i, t in enumerate(plan.rollback_triggers):
        if t.check is not None:
            yield CheckSite(("rollback_triggers", i, "check"), t.check, end)
    for i, c in enumerate(plan.health):
        yield CheckSite(("health", i), c, anywhere)
    for name, op in plan.operations.items():
        for j, c in enumerate(op.checks):
            yield CheckSite(("operations", name, "checks", j), c, anywhere)


def resolve_check(plan: Plan, check: CheckBase | CheckUse, _depth: int = 0) -> CheckBase | None:
    """Follow ``use:`` references to the declared check, applying level overrides."""
    if isinstance(check, CheckBase):
        return check
    if _depth > 16:
        return None
    target = plan.checks.get(check.use)
    if target is None:
        return None
    base = resolve_check(plan, target, _depth + 1)
    if base is None:
        return None
    overrides = {
        k: getattr(check, k)
        for k in ("name", "expect", "warn", "critical")
        if getattr(check, k) is not None
    }
    if "name" not in overrides and base.name is None:
        overrides["name"] = check.use
    return base.model_copy(update=overrides) if overrides else base


def backup_dests(plan: Plan) -> list[str | None]:
    """The ``dest`` of every backup step, operations included (``None``: the default, under
    the state directory): the local directories a run of the plan writes backups to."""
    return [site.step.dest for site in iter_steps(plan) if isinstance(site.step, BackupStep)]
