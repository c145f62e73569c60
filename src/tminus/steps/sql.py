"""``kind: sql``: statements on a database target, in one transaction by default."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from tminus import work
from tminus.plan.interpolate import Resolver
from tminus.plan.sqlbind import Bound, SqlBindError, prepare
from tminus.plan.steps import SqlStep
from tminus.sqlrun import db_error, run_statements
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "SqlKind"]


def _statements(step: SqlStep, kind: str, r: Resolver) -> list[str | Bound]:
    """The statements to run: a statement with ``${…}`` or ``:param`` bound (one per
    execute, values passed to the driver), any other as written; then the file's, as
    written (a file is not interpolated)."""
    out = prepare(step.statements, kind, r, step.params)
    if step.file:
        text = Path(r.resolve(step.file)).read_text()
        out.extend(s.strip() for s in text.split(";\n") if s.strip())
    return out


class SqlKind(StepKindBase):
    kind: ClassVar[str] = "sql"

    async def execute(self, step: SqlStep, ctx: StepContext) -> StepOutcome:
        db = ctx.plan.targets.databases[step.database]
        r = ctx.resolver
        url = r.resolve(db.url)
        try:
            stmts = _statements(step, db.kind, r)
            rows = await work.in_thread(
                run_statements, db.kind, url, stmts, transaction=step.transaction
            )
        except SqlBindError as exc:  # refused before anything ran
            hint = f" (hint: {exc.hint})" if exc.hint else ""
            return StepOutcome(False, "", r.mask(f"nothing was run: {exc}{hint}"))
        except Exception as exc:  # driver errors vary by database
            return StepOutcome(False, "", r.mask(db_error(exc)))
        msg = f"{len(stmts)} statement(s), {rows} row(s) affected"
        ctx.log(msg)
        return StepOutcome(True, msg, None, {"rows": rows})

    def compensation(self, step: SqlStep, ctx: StepContext) -> Compensation | None:
        return None


KIND = SqlKind()
