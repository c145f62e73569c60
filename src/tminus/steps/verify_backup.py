"""``kind: verify_backup``: the tested rollback (seed 002). Restore the backup into a scratch
database, schema or directory on the same server, compare tables, indexes, constraints,
sequences, exact row counts and checksums with the manifest, drop the scratch copy."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from tminus.backups.base import BackupError
from tminus.backups.targets import verify_backup
from tminus.errors import PlanError
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import BackupRef, BackupStep, VerifyBackupStep
from tminus.plan.walk import iter_steps
from tminus.steps._data import (
    data_target,
    preflight_target,
    resolve_from,
    scratch_preflight,
)
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "VerifyBackupKind", "verify_backup"]


class VerifyBackupKind(StepKindBase):
    kind: ClassVar[str] = "verify_backup"

    async def execute(self, step: VerifyBackupStep, ctx: StepContext) -> StepOutcome:
        try:
            ok, message, _ = await verify_backup(ctx.plan, ctx.resolver, step.from_, ctx.deploy_id)
        except (BackupError, PlanError) as exc:
            return StepOutcome(False, error=ctx.resolver.mask(str(exc)))
        ctx.log(message)
        return StepOutcome(ok, message, None if ok else message, {"verified": ok})

    def preflight(
        self, step: VerifyBackupStep, plan: Plan, resolver: Resolver, state_dir: Path
    ) -> list[str]:
        """The tools, and the privilege to create the scratch database (see
        :func:`scratch_preflight`), for the target of the backup step ``from`` names."""
        if isinstance(step.from_, BackupRef):
            # An earlier deploy's backup: it must exist and verify before anything runs.
            try:
                art = resolve_from(plan, resolver, step.from_, deploy_id=None)
            except PlanError as exc:
                hint = f" ({exc.hint})" if exc.hint else ""
                return [f"{step.title()}: {exc}{hint}"]
            database = str(art["target"]) if art["target_role"] == "database" else None
            if database is not None and database not in plan.targets.databases:
                return [
                    f"{step.title()}: backup {art['backup_id']} of deploy {art['deploy_id']} is "
                    f"of database '{database}', which this plan does not declare"
                ]
        else:
            backup = next(
                (
                    s.step
                    for s in iter_steps(plan)
                    if isinstance(s.step, BackupStep) and s.step.id == step.from_
                ),
                None,
            )
            database = backup.database if backup is not None else None
        if database is None:
            return []  # a path backup needs no privilege; an unknown id: `tminus check`
        problems = preflight_target(
            plan,
            resolver,
            database=database,
            path=None,
            dest=None,
            state_dir=state_dir,
            need_disk=False,
        )
        try:
            target = data_target(plan, resolver, database=database, path=None)
        except Exception:  # unresolvable URL: reported by the step itself
            return problems
        return problems + scratch_preflight(target)

    def compensation(self, step: VerifyBackupStep, ctx: StepContext) -> Compensation | None:
        return None


KIND = VerifyBackupKind()
