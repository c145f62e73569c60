"""``kind: sql``: statements on a database target, in one transaction by default."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from tminus import work
from tminus.plan.interpolate import Resolver
from tminus.plan.steps import SqlStep
from tminus.sqlrun import db_error, run_statements
from tminus.steps.base import Compensation, StepContext, StepOutcome

__all__ = ["KIND", "SqlKind"]


def _statements(step: SqlStep, r: Resolver) -> list[str]:
    out = [r.resolve(s) for s in step.statements]
    if step.file:
        text = Path(r.resolve(step.file)).read_text()
        out.extend(s.strip() for s in text.split(";\n") if s.strip())
    return out


class SqlKind:
    kind: ClassVar[str] = "sql"

    async def execute(self, step: SqlStep, ctx: StepContext) -> StepOutcome:
        db = ctx.plan.targets.databases[step.database]
        r = ctx.resolver
        url = r.resolve(db.url)
        try:
            stmts = _statements(step, r)
            rows = await work.in_thread(
                run_statements, db.kind, url, stmts, transaction=step.transaction
            )
        except Exception as exc:  # driver errors vary by database
            return StepOutcome(False, "", r.mask(db_error(exc)))
        msg = f"{len(stmts)} statement(s), {rows} row(s) affected"
        ctx.log(msg)
        return StepOutcome(True, msg, None, {"rows": rows})

    def compensation(self, step: SqlStep, ctx: StepContext) -> Compensation | None:
        return None

    def describe(self, step: SqlStep, resolver: Resolver) -> str:
        stmts = [resolver.resolve(s) for s in step.statements]
        if step.file:
            stmts.append(f"<statements of {resolver.resolve(step.file)}>")
        return resolver.mask(f"on {step.database}: " + "; ".join(stmts))


KIND = SqlKind()
