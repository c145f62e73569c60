"""``kind: restore``: restore the backup a backup step made (``from:``), into its own target
or the one named here. The driver checks every file of the backup first and refuses a damaged
one without touching the target, restores, then compares the result with the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from tminus import work
from tminus.backups.base import BackupError, Manifest, check_tools, get_driver
from tminus.errors import PlanError
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import RestoreStep
from tminus.steps._data import data_target, from_backup, preflight_target
from tminus.steps.base import Compensation, StepContext, StepOutcome

__all__ = ["KIND", "RestoreKind"]


class RestoreKind:
    kind: ClassVar[str] = "restore"

    async def execute(self, step: RestoreStep, ctx: StepContext) -> StepOutcome:
        r = ctx.resolver
        try:
            art = from_backup(r, step.from_)
        except PlanError as exc:
            return StepOutcome(False, error=str(exc))
        database = step.database
        path = step.path
        if database is None and path is None:
            if art["target_role"] == "path":
                path = str(art["target"])
            else:
                database = str(art["target"])
        target = data_target(ctx.plan, r, database=database, path=path)
        missing = check_tools(target.kind)
        if missing:
            return StepOutcome(False, error="; ".join(missing))
        try:
            manifest = Manifest.load(art["dir"])
            driver = get_driver(target.kind)
            await work.in_thread(driver.restore, manifest, art["dir"], target.url, jobs=step.jobs)
        except BackupError as exc:
            return StepOutcome(False, error=r.mask(str(exc)))
        msg = f"restored {manifest.id} into {target.name}; it matches the manifest"
        ctx.log(msg)
        return StepOutcome(True, msg, artifacts={"backup_id": manifest.id, "target": target.name})

    def preflight(
        self, step: RestoreStep, plan: Plan, resolver: Resolver, state_dir: Path
    ) -> list[str]:
        if step.database is None and step.path is None:
            return []  # the backup's own target: checked by the backup step's preflight
        return preflight_target(
            plan,
            resolver,
            database=step.database,
            path=step.path,
            dest=None,
            state_dir=state_dir,
            need_disk=False,
        )

    def compensation(self, step: RestoreStep, ctx: StepContext) -> Compensation | None:
        return None

    def describe(self, step: RestoreStep, resolver: Resolver) -> str:
        into = step.database or step.path or "its own target"
        return f"restore backup '{step.from_}' into {into} (checksums first, then compare)"


KIND = RestoreKind()
