"""``source: verify_backup``: the ``verify_backup`` step as a check (scratch restore and
compare); the value is the number of mismatches."""

from __future__ import annotations

from typing import ClassVar

from tminus.backups.targets import verify_backup
from tminus.plan.checks import BackupCheck
from tminus.sources.base import CheckContext, Measurement

__all__ = ["SOURCE", "VerifyBackupSource"]


class VerifyBackupSource:
    source: ClassVar[str] = "verify_backup"

    async def measure(self, check: BackupCheck, ctx: CheckContext) -> Measurement:
        try:
            ok, message, report = await verify_backup(ctx.plan, ctx.resolver, check.backup)
        except Exception as exc:  # any failure of the scratch restore is an error
            return Measurement(error=ctx.resolver.mask(f"{type(exc).__name__}: {exc}"))
        problems = len(report.mismatches) if report is not None else 1
        return Measurement(value=0 if ok else max(problems, 1), ok=ok, message=message)


SOURCE = VerifyBackupSource()
