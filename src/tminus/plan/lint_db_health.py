"""`tminus check` for database health: ``db_health`` checks (their database target exists and
is PostgreSQL, MariaDB or MySQL; ``measured_on``/``no_replica`` are given where they have an
effect and only there), and a warning for a ``sql`` check that reads replication lag with
``pg_last_xact_replay_timestamp()`` without ``pg_is_in_recovery()``: on a primary (or after a
failover) that query reads 0 s of lag whatever the replica does."""

from __future__ import annotations

import re

from tminus.plan.checks import DbHealthCheck, SqlCheck
from tminus.plan.model import Plan
from tminus.plan.problems import Problem, did_you_mean
from tminus.plan.walk import iter_check_sites

__all__ = ["db_health_problems", "db_health_unsupported"]

REPLICATION = ("replication_lag", "replication_lag_bytes")

_REPLAY_TS = re.compile(r"pg_last_xact_replay_timestamp\s*\(", re.IGNORECASE)
_IN_RECOVERY = re.compile(r"pg_is_in_recovery\s*\(", re.IGNORECASE)


def db_health_unsupported(check: DbHealthCheck, kind: str) -> str | None:
    """Why ``check`` cannot run on a database of ``kind``, or None (the source's rule too)."""
    if kind not in ("postgres", "mariadb", "mysql"):
        return f"db_health reads PostgreSQL, MariaDB or MySQL, not {kind}"
    replication = check.metric in REPLICATION
    if replication and check.measured_on is None:
        return f"metric {check.metric} needs 'measured_on: primary' or 'measured_on: replica'"
    if not replication and check.measured_on is not None:
        return f"'measured_on' applies only to replication metrics, not {check.metric}"
    if not replication and "no_replica" in check.model_fields_set:
        return f"'no_replica' applies only to replication metrics, not {check.metric}"
    if kind != "postgres" and replication:
        if check.metric == "replication_lag_bytes":
            return "replication_lag_bytes is measured on PostgreSQL only"
        if check.measured_on == "primary":
            return (
                f"{kind} replication lag is read on the replica (SHOW REPLICA STATUS): "
                "use 'measured_on: replica' with the replica's database target"
            )
    return None


def db_health_problems(plan: Plan) -> list[Problem]:
    out: list[Problem] = []
    dbs = plan.targets.databases
    for site in iter_check_sites(plan):
        c = site.check
        if isinstance(c, DbHealthCheck):
            db = dbs.get(c.database)
            if db is None:
                names = sorted(dbs)
                out.append(
                    Problem(
                        "error",
                        "undefined-database",
                        f"database '{c.database}' is not defined",
                        path=(*site.path, "database"),
                        hint=did_you_mean(c.database, names)
                        or "define it under 'targets.databases'"
                        + (f" (defined: {', '.join(names)})" if names else ""),
                    )
                )
                continue
            why = db_health_unsupported(c, db.kind)
            if why:
                out.append(
                    Problem(
                        "error",
                        "db-health",
                        why,
                        path=site.path,
                        hint="see docs/checking.md, 'Database health'",
                    )
                )
        elif (
            isinstance(c, SqlCheck)
            and _REPLAY_TS.search(c.query)
            and not _IN_RECOVERY.search(c.query)
        ):
            out.append(
                Problem(
                    "warning",
                    "replication-lag-sql",
                    "this query reads replication lag with pg_last_xact_replay_timestamp() "
                    "but not pg_is_in_recovery(): on a primary it reads 0 s (or NULL), "
                    "whatever the replica does",
                    path=(*site.path, "query"),
                    hint="use 'source: db_health' with 'metric: replication_lag' and "
                    "'measured_on: primary' or 'replica' (docs/checking.md)",
                )
            )
    return out
