"""``source: no_data_loss``: compare the live targets with a snapshot step's record. Every
table recorded must still exist with at least as many rows, every index must exist, the
target's declared ``tables`` must exist, and no path may have fewer files, unless the check
allows it (``allow_row_loss``, ``allow_missing``). The value is the number of problems.

Indexes are compared by what the data needs, not by name (PostgreSQL and MariaDB snapshots
record columns, index key columns and constraints): every column and every named constraint
(primary key, foreign key, check) must remain, every unique key must remain with the same
columns, and every index's columns must still lead some index (so MariaDB dropping the
implicit index of a foreign key, once a composite index covers it, is not a loss)."""

from __future__ import annotations

from typing import Any, ClassVar

from tminus import work
from tminus.backups.registry import get_driver
from tminus.backups.targets import data_target
from tminus.plan.checks import NoDataLossCheck
from tminus.sources.base import CheckContext, Measurement

__all__ = ["SOURCE", "NoDataLossSource", "compare_snapshots"]


def compare_snapshots(
    before: dict[str, Any],
    now: dict[str, Any],
    *,
    declared: list[str],
    allow_rows: set[str],
    allow_missing: set[str],
    label: str,
) -> list[str]:
    problems: list[str] = []
    if "tables" in before:
        tables_now: dict[str, int] = now.get("tables", {})
        short = {t.rsplit(".", 1)[-1]: t for t in tables_now}
        for table, rows in before["tables"].items():
            if table in allow_missing or table.rsplit(".", 1)[-1] in allow_missing:
                continue
            if table not in tables_now:
                problems.append(f"{label}: table {table} is gone")
            elif (
                tables_now[table] < rows
                and table not in allow_rows
                and (table.rsplit(".", 1)[-1] not in allow_rows)
            ):
                problems.append(f"{label}: {table} lost {rows - tables_now[table]} row(s)")
        if "index_columns" in before and "index_columns" in now:
            for table in before["tables"]:
                if table in tables_now and not _allowed(table, allow_missing):
                    problems += _compare_shape(table, before, now, allow_missing, label)
        else:  # a snapshot recorded before index columns were: compare index names
            for idx in before.get("indexes", []):
                if idx not in now.get("indexes", []) and idx not in allow_missing:
                    problems.append(f"{label}: index {idx} is gone")
        for t in declared:
            if t not in tables_now and t not in short:
                problems.append(f"{label}: expected table {t} does not exist")
    else:
        if now.get("files", 0) < before.get("files", 0) and label not in allow_missing:
            problems.append(f"{label}: {before['files'] - now['files']} file(s) vanished")
    return problems


def _allowed(name: str, allow_missing: set[str]) -> bool:
    return name in allow_missing or name.rsplit(".", 1)[-1] in allow_missing


def _cols(columns: list[str]) -> str:
    return "(" + ", ".join(columns) + ")"


def _compare_shape(
    table: str, before: dict[str, Any], now: dict[str, Any], allow_missing: set[str], label: str
) -> list[str]:
    """What the data needs, on one table that still exists: every column, every named
    constraint (primary key, foreign key, check), every unique key (by its columns), and
    for every index, some index that still starts with its columns. Index *names* do not
    matter: InnoDB drops the index it made for a foreign key when a composite index that
    starts with the key's columns is added, and nothing the data needs is lost."""
    problems: list[str] = []
    short = table.rsplit(".", 1)[-1]

    def allowed(name: str) -> bool:
        qualified = (f"{short}.{name}", f"{table}.{name}", f"{table.rsplit('.', 1)[0]}.{name}")
        return _allowed(name, allow_missing) or any(q in allow_missing for q in qualified)

    cols_now = set(now.get("columns", {}).get(table, []))
    for col in before.get("columns", {}).get(table, []):
        if col not in cols_now and not allowed(col):
            problems.append(f"{label}: column {table}.{col} is gone")
    cons_now = now.get("constraints", {}).get(table, {})
    for name, kind in before.get("constraints", {}).get(table, {}).items():
        if name not in cons_now and not allowed(name):
            problems.append(f"{label}: {kind} constraint {table}.{name} is gone")
    idx_now: dict[str, dict[str, Any]] = now["index_columns"].get(table, {})
    unique_now = {tuple(i["columns"]) for i in idx_now.values() if i["unique"]}
    leading = [list(i["columns"]) for i in idx_now.values()]
    for name, idx in before["index_columns"].get(table, {}).items():
        columns = list(idx["columns"])
        if allowed(name):
            continue
        if idx["unique"]:
            if tuple(columns) not in unique_now:
                problems.append(f"{label}: unique key {table}.{name} {_cols(columns)} is gone")
        elif not any(lead[: len(columns)] == columns for lead in leading):
            problems.append(
                f"{label}: index {table}.{name} is gone (no index starts with {_cols(columns)})"
            )
    return problems


class NoDataLossSource:
    source: ClassVar[str] = "no_data_loss"

    async def measure(self, check: NoDataLossCheck, ctx: CheckContext) -> Measurement:
        r = ctx.resolver
        snap = r.artifacts(check.snapshot, "snapshot") if r.artifacts else None
        if not snap:
            return Measurement(message=f"snapshot '{check.snapshot}' has not been taken yet")
        problems: list[str] = []
        checked = 0
        try:
            for role in ("databases", "paths"):
                for name, before in snap.get(role, {}).items():
                    t = data_target(
                        ctx.plan,
                        r,
                        database=name if role == "databases" else None,
                        path=name if role == "paths" else None,
                    )
                    now = await work.in_thread(get_driver(t.kind).snapshot, t.url)
                    declared = (
                        ctx.plan.targets.databases[name].tables if role == "databases" else []
                    )
                    problems += compare_snapshots(
                        before,
                        now,
                        declared=list(declared),
                        allow_rows=set(check.allow_row_loss),
                        allow_missing=set(check.allow_missing),
                        label=name,
                    )
                    checked += len(before.get("tables", {})) or 1
        except Exception as exc:  # the source failed: an error, never a pass
            return Measurement(error=r.mask(f"{type(exc).__name__}: {exc}"))
        if checked == 0:
            return Measurement(error="the snapshot holds nothing to compare (0 objects checked)")
        msg = "; ".join(problems) if problems else f"no data lost ({checked} object(s) checked)"
        return Measurement(value=len(problems), ok=not problems, message=msg)


SOURCE = NoDataLossSource()
