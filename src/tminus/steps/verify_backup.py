"""``kind: verify_backup``: the tested rollback (seed 002). Restore the backup into a scratch
database, schema or directory on the same server, compare tables, indexes, constraints,
sequences, exact row counts and checksums with the manifest, drop the scratch copy."""

from __future__ import annotations

from typing import Any, ClassVar

from tminus import work
from tminus.backups.base import BackupError, Manifest, check_tools, get_driver
from tminus.errors import PlanError
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import VerifyBackupStep
from tminus.steps._data import data_target, from_backup
from tminus.steps.base import Compensation, StepContext, StepOutcome

__all__ = ["KIND", "VerifyBackupKind", "verify_backup"]


async def verify_backup(plan: Plan, r: Resolver, backup_step: str) -> tuple[bool, str, Any]:
    """(ok, message, report) of a scratch restore of ``backup_step``'s backup."""
    art = from_backup(r, backup_step)
    role = str(art["target_role"])
    target = data_target(
        plan,
        r,
        database=str(art["target"]) if role == "database" else None,
        path=str(art["target"]) if role == "path" else None,
    )
    missing = check_tools(target.kind)
    if missing:
        return False, "; ".join(missing), None
    manifest = Manifest.load(art["dir"])
    driver = get_driver(target.kind)
    report = await work.in_thread(driver.verify, manifest, art["dir"], target.url)
    return report.ok, r.mask(report.summary()), report


class VerifyBackupKind:
    kind: ClassVar[str] = "verify_backup"

    async def execute(self, step: VerifyBackupStep, ctx: StepContext) -> StepOutcome:
        try:
            ok, message, _ = await verify_backup(ctx.plan, ctx.resolver, step.from_)
        except (BackupError, PlanError) as exc:
            return StepOutcome(False, error=ctx.resolver.mask(str(exc)))
        ctx.log(message)
        return StepOutcome(ok, message, None if ok else message, {"verified": ok})

    def compensation(self, step: VerifyBackupStep, ctx: StepContext) -> Compensation | None:
        return None

    def describe(self, step: VerifyBackupStep, resolver: Resolver) -> str:
        return f"restore backup '{step.from_}' into a scratch copy, compare, drop it"


KIND = VerifyBackupKind()
