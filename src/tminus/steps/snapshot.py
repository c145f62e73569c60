"""``kind: snapshot``: record tables, indexes, exact row counts (databases) and file counts
(paths) for a later ``no_data_loss`` check."""

from __future__ import annotations

from typing import Any, ClassVar

from tminus import work
from tminus.backups.registry import get_driver
from tminus.plan.steps import SnapshotStep
from tminus.steps._data import data_target
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "SnapshotKind"]


class SnapshotKind(StepKindBase):
    kind: ClassVar[str] = "snapshot"

    async def execute(self, step: SnapshotStep, ctx: StepContext) -> StepOutcome:
        r = ctx.resolver
        snap: dict[str, Any] = {"databases": {}, "paths": {}}
        lines = []
        try:
            for name in step.databases:
                t = data_target(ctx.plan, r, database=name, path=None)
                s = await work.in_thread(get_driver(t.kind).snapshot, t.url)
                snap["databases"][name] = s
                lines.append(f"{name}: {len(s['tables'])} tables, {s['total_rows']} rows")
            for name in step.paths:
                t = data_target(ctx.plan, r, database=None, path=name)
                s = await work.in_thread(get_driver(t.kind).snapshot, t.url)
                snap["paths"][name] = s
                lines.append(f"{name}: {s['files']} files, {s['bytes']} bytes")
        except Exception as exc:  # BackupError, OSError, or a driver's database error
            return StepOutcome(False, error=r.mask(f"{type(exc).__name__}: {exc}"))
        for line in lines:
            ctx.log(line)
        return StepOutcome(True, "; ".join(lines), artifacts={"snapshot": snap})

    def compensation(self, step: SnapshotStep, ctx: StepContext) -> Compensation | None:
        return None


KIND = SnapshotKind()
