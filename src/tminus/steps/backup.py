"""``kind: backup``: back up a database or a path target with its driver (pg_dump -Fd -j,
mariadb-dump --single-transaction, the SQLite backup API, a tar archive), after checking
that the tools exist and the disk has room. The backup is an artifact of the deploy: later
``restore``/``verify_backup`` steps and checks find it through this step's id."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from tminus import work
from tminus.backups.base import BackupError, check_tools
from tminus.backups.registry import get_driver
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import BackupStep
from tminus.steps._data import backup_root, data_target, disk_preflight, preflight_target
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "BackupKind"]


class BackupKind(StepKindBase):
    kind: ClassVar[str] = "backup"

    async def execute(self, step: BackupStep, ctx: StepContext) -> StepOutcome:
        r = ctx.resolver
        target = data_target(ctx.plan, r, database=step.database, path=step.path)
        missing = check_tools(target.kind)
        if missing:
            return StepOutcome(False, error="; ".join(missing))
        driver = get_driver(target.kind)
        root = backup_root(step.dest, r, ctx.state_dir)
        try:
            short = await disk_preflight(driver, target, root)
            if short:
                return StepOutcome(False, error=short)
            manifest = await work.in_thread(driver.backup, target.url, root, jobs=step.jobs)
        except BackupError as exc:
            return StepOutcome(False, error=r.mask(str(exc)))
        backup_dir = root / manifest.id
        summary = (
            f"backup {manifest.id}: {len(manifest.tables)} table(s), "
            f"{len(manifest.files)} file(s), {manifest.totals.get('bytes', 0)} bytes"
        )
        stale = manifest.details.get("removed_partials") or []
        if stale:
            what = "directory" if len(stale) == 1 else "directories"
            summary += (
                f"; removed the partial backup {what} of an interrupted attempt: "
                + ", ".join(stale)
            )
        ctx.log(summary)
        return StepOutcome(
            True,
            summary,
            artifacts={
                "backup_id": manifest.id,
                "dir": str(backup_dir.resolve()),
                "kind": target.kind,
                "target": target.name,
                "target_role": target.role,
                "tables": len(manifest.tables),
                "files": len(manifest.files),
                "bytes": manifest.totals.get("bytes", 0),
            },
        )

    def preflight(
        self, step: BackupStep, plan: Plan, resolver: Resolver, state_dir: Path
    ) -> list[str]:
        return preflight_target(
            plan,
            resolver,
            database=step.database,
            path=step.path,
            dest=step.dest,
            state_dir=state_dir,
            need_disk=True,
        )

    def compensation(self, step: BackupStep, ctx: StepContext) -> Compensation | None:
        return None  # a backup is kept; `tminus backups prune` removes old ones


KIND = BackupKind()
