"""``source: sql``: the first column of the first row of a query on a database target."""

from __future__ import annotations

from typing import Any, ClassVar

from tminus import work
from tminus.plan.checks import SqlCheck
from tminus.plan.sqlbind import SqlBindError, prepare
from tminus.sources.base import CheckContext, Measurement, plain_number
from tminus.sqlrun import db_error, run_query

__all__ = ["SOURCE", "SqlSource"]


class SqlSource:
    source: ClassVar[str] = "sql"

    async def measure(self, check: SqlCheck, ctx: CheckContext) -> Measurement:
        db = ctx.plan.targets.databases[check.database]
        url = ctx.resolver.resolve(db.url)
        try:  # a query with ${…} or :params is bound: values go to the driver, not the text
            prepared = prepare([check.query], db.kind, ctx.resolver, check.params)
        except SqlBindError as exc:
            hint = f" (hint: {exc.hint})" if exc.hint else ""
            return Measurement(error=ctx.resolver.mask(f"the query was not run: {exc}{hint}"))
        if len(prepared) != 1:
            return Measurement(
                error=f"the query was not run: it is {len(prepared)} statements, not one"
            )
        query = prepared[0]
        try:
            rows: list[tuple[Any, ...]] = await work.in_thread(run_query, db.kind, url, query)
        except Exception as exc:  # the driver's errors vary by database
            return Measurement(error=ctx.resolver.mask(db_error(exc)))
        if not rows:
            return Measurement(value=None, message="the query returned no rows")
        # numeric/DECIMAL columns and decimal literals arrive as Decimal: judge them as numbers
        value = plain_number(rows[0][0])
        if not (check.expect or check.warn or check.critical):
            return Measurement(value=value, ok=bool(value), message=f"first value {value!r}")
        return Measurement(value=value, message=f"{value!r}")


SOURCE = SqlSource()
