"""``source: db_health``: a health metric of a PostgreSQL or MariaDB/MySQL database target.

Metrics (docs/checking.md, "Database health"): ``replication_lag`` (seconds),
``replication_lag_bytes`` (PostgreSQL), ``connections`` (connections in use as a fraction of
``max_connections``), ``lock_waits`` (sessions waiting on a lock), ``longest_lock_wait``
(seconds) and ``oldest_transaction`` (the oldest open transaction's age, seconds).

Replication is never "0 s of lag" by default: a primary with no replica connected, or a server
that is not a replica, is inconclusive (or failed, with ``no_replica: failed``); a replica
whose WAL receiver is not streaming, or whose MariaDB IO/SQL thread is not running, fails.
A failure with no number to show carries a text value (what is wrong) and ``ok=False``, so
that :func:`~tminus.sources.base.judge` fails it whatever the conditions.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tminus import work
from tminus.plan.checks import DbHealthCheck
from tminus.plan.lint_db_health import REPLICATION, db_health_unsupported
from tminus.sources.base import CheckContext, Measurement, plain_number
from tminus.sqlrun import db_error, engine_url

__all__ = ["SOURCE", "DbHealthSource"]


def _num(value: Any) -> Any:
    """A driver's number as int/float (None stays None)."""
    return plain_number(value)


def _s(seconds: float) -> str:
    return f"{seconds:.3g}s" if seconds < 100 else f"{seconds:.0f}s"


def _failed(what: str) -> Measurement:
    """Failed whatever the conditions: a text value no number condition meets, not ok."""
    return Measurement(value=what, ok=False, message=what)


def _no_replica(check: DbHealthCheck, what: str) -> Measurement:
    if check.no_replica == "failed":
        return _failed(what)
    return Measurement(no_data=True, message=f"{what} (inconclusive: not 0 s of lag)")


def _rows(cur: Any, sql: str) -> list[tuple[Any, ...]]:
    cur.execute(sql)
    return [tuple(r) for r in cur.fetchall()]


def _dicts(cur: Any, sql: str) -> list[dict[str, Any]]:
    cur.execute(sql)
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, r, strict=False)) for r in cur.fetchall()]


# --- PostgreSQL ----------------------------------------------------------------------------


def _pg_in_recovery(cur: Any) -> bool:
    return bool(_rows(cur, "SELECT pg_is_in_recovery()")[0][0])


def _pg_primary_lag(check: DbHealthCheck, cur: Any) -> Measurement:
    if _pg_in_recovery(cur):
        return _failed("the server is a replica, not a primary (measured_on: primary)")
    rows = _rows(
        cur,
        "SELECT application_name, client_addr::text, state,"
        " EXTRACT(EPOCH FROM replay_lag),"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)"
        " FROM pg_stat_replication",
    )
    if not rows:
        return _no_replica(check, "no replica is connected to the primary")
    replicas: dict[str, dict[str, Any]] = {}
    for name, addr, state, lag, behind in rows:
        key = str(name or addr or f"replica {len(replicas) + 1}")
        behind_b = _num(behind)
        lag_s = _num(lag)
        if lag_s is None and behind_b == 0:
            lag_s = 0  # caught up and idle: PostgreSQL clears replay_lag
        replicas[key] = {"state": state, "lag_s": lag_s, "behind_bytes": behind_b}
    field = "lag_s" if check.metric == "replication_lag" else "behind_bytes"
    known = {k: v[field] for k, v in replicas.items() if v[field] is not None}
    if not known:
        return Measurement(
            no_data=True,
            values={"replicas": replicas},
            message=f"no replica has reported its replay position yet ({', '.join(replicas)})",
        )
    worst = max(known, key=lambda k: known[k])
    value = known[worst]
    unit = _s(float(value)) if field == "lag_s" else f"{value} bytes"
    n = len(replicas)
    return Measurement(
        value=value,
        values={"replicas": replicas, "worst": worst},
        message=f"{unit} behind (worst of {n} replica{'s' if n > 1 else ''}: {worst}, "
        f"{replicas[worst]['state']})",
    )


def _pg_replica_lag(check: DbHealthCheck, cur: Any) -> Measurement:
    if not _pg_in_recovery(cur):
        return _no_replica(check, "the server is not a replica (pg_is_in_recovery() is false)")
    receiver = _rows(cur, "SELECT status FROM pg_stat_wal_receiver")
    status = receiver[0][0] if receiver else None
    ((behind, age, paused),) = _rows(
        cur,
        "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()),"
        " EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()),"
        " pg_is_wal_replay_paused()",
    )
    values = {"wal_receiver": status, "replay_paused": bool(paused)}
    if status != "streaming":
        return _failed(f"the WAL receiver is not streaming (status: {status or 'not running'})")
    behind_b = _num(behind)
    values["behind_bytes"] = behind_b
    note = ", replay paused" if paused else ""
    if check.metric == "replication_lag_bytes":
        if behind_b is None:
            return Measurement(no_data=True, values=values, message="no WAL received yet")
        return Measurement(
            value=behind_b, values=values, message=f"{behind_b} bytes not replayed{note}"
        )
    if behind_b == 0:  # everything received is replayed: no lag, however old the last commit
        return Measurement(value=0, values=values, message=f"0s: all received WAL replayed{note}")
    lag = _num(age)
    if lag is None:
        return Measurement(
            no_data=True, values=values, message="no transaction has been replayed yet"
        )
    lag = max(float(lag), 0.0)
    return Measurement(
        value=lag, values=values, message=f"{_s(lag)} behind ({behind_b} bytes to replay{note})"
    )


def _pg_connections(cur: Any) -> Measurement:
    ((used, most),) = _rows(
        cur,
        "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
        " current_setting('max_connections')::int",
    )
    return _share(int(used), int(most))


def _pg_locks(check: DbHealthCheck, cur: Any) -> Measurement:
    ((count, longest),) = _rows(
        cur,
        "SELECT count(DISTINCT l.pid), EXTRACT(EPOCH FROM now() - min(l.waitstart))"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND a.datname = current_database()",
    )
    return _locks(check, int(count), _num(longest))


def _pg_oldest(cur: Any) -> Measurement:
    ((count, age),) = _rows(
        cur,
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(xact_start)) FROM pg_stat_activity"
        " WHERE xact_start IS NOT NULL AND backend_type = 'client backend'"
        " AND pid <> pg_backend_pid() AND datname = current_database()",
    )
    return _oldest(int(count), _num(age))


# --- MariaDB / MySQL -----------------------------------------------------------------------


def _my_replica_lag(check: DbHealthCheck, cur: Any) -> Measurement:
    try:
        rows = _dicts(cur, "SHOW REPLICA STATUS")
    except Exception:  # before MariaDB 10.5 / MySQL 8.0.22
        rows = _dicts(cur, "SHOW SLAVE STATUS")
    if not rows:
        return _no_replica(check, "the server is not a replica (SHOW REPLICA STATUS is empty)")
    worst: float | None = None
    channels: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = str(row.get("Connection_name") or row.get("Channel_Name") or "default")
        io = row.get("Slave_IO_Running", row.get("Replica_IO_Running"))
        sql = row.get("Slave_SQL_Running", row.get("Replica_SQL_Running"))
        lag = _num(row.get("Seconds_Behind_Master", row.get("Seconds_Behind_Source")))
        channels[name] = {"io_running": io, "sql_running": sql, "lag_s": lag}
        if io != "Yes" or sql != "Yes":
            error = row.get("Last_SQL_Error") or row.get("Last_IO_Error") or ""
            return _failed(
                f"replication is stopped on '{name}': IO thread {io}, SQL thread {sql}"
                + (f" ({error})" if error else "")
            )
        if lag is None:
            return _no_replica(check, f"Seconds_Behind_Master is NULL on '{name}'")
        worst = float(lag) if worst is None else max(worst, float(lag))
    assert worst is not None
    return Measurement(
        value=worst, values={"channels": channels}, message=f"{_s(worst)} behind the primary"
    )


def _my_connections(cur: Any) -> Measurement:
    status = dict(_rows(cur, "SHOW GLOBAL STATUS LIKE 'Threads_connected'"))
    ((most,),) = _rows(cur, "SELECT @@max_connections")
    return _share(int(status["Threads_connected"]), int(most))


#: Sessions of the target's database (all, when the URL names none): a shared server's other
#: databases are not this check's business.
_MY_OURS = "(DATABASE() IS NULL OR p.DB = DATABASE())"


def _my_locks(check: DbHealthCheck, cur: Any) -> Measurement:
    # a session waiting on a row lock (InnoDB) or a metadata/table lock, counted once
    ((count, longest),) = _rows(
        cur,
        "SELECT COUNT(*), MAX(w) FROM (SELECT id, MAX(w) AS w FROM ("
        " SELECT t.trx_mysql_thread_id AS id,"
        " TIMESTAMPDIFF(MICROSECOND, t.trx_wait_started, NOW(6)) / 1e6 AS w"
        " FROM information_schema.INNODB_TRX t"
        " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
        f" WHERE t.trx_state = 'LOCK WAIT' AND {_MY_OURS}"
        " UNION ALL SELECT p.ID, p.TIME_MS / 1000 FROM information_schema.PROCESSLIST p"
        f" WHERE p.STATE LIKE 'Waiting for%lock%' AND p.ID <> CONNECTION_ID() AND {_MY_OURS}"
        ") u GROUP BY id) g",
    )
    return _locks(check, int(count), _num(longest))


def _my_oldest(cur: Any) -> Measurement:
    ((count, age),) = _rows(
        cur,
        "SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(t.trx_started), NOW(6)) / 1e6"
        " FROM information_schema.INNODB_TRX t"
        " JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
        f" WHERE t.trx_mysql_thread_id <> CONNECTION_ID() AND {_MY_OURS}",
    )
    return _oldest(int(count), _num(age))


# --- shared --------------------------------------------------------------------------------


def _share(used: int, most: int) -> Measurement:
    share = used / most if most > 0 else 1.0
    return Measurement(
        value=share,
        values={"connections": used, "max_connections": most},
        message=f"{share:.1%} ({used} of max_connections {most})",
    )


def _locks(check: DbHealthCheck, count: int, longest: float | int | None) -> Measurement:
    wait = max(float(longest), 0.0) if longest is not None and count else 0.0
    values = {"waiting": count, "longest_wait_s": wait}
    if check.metric == "lock_waits":
        return Measurement(
            value=count,
            values=values,
            message=f"{count} session(s) waiting on a lock"
            + (f", the longest for {_s(wait)}" if count else ""),
        )
    return Measurement(
        value=wait,
        values=values,
        message=f"longest lock wait {_s(wait)} ({count} waiting)" if count else "no lock waits",
    )


def _oldest(count: int, age: float | int | None) -> Measurement:
    if not count or age is None:
        return Measurement(value=0, values={"open": 0}, message="no open transaction")
    age = max(float(age), 0.0)
    return Measurement(
        value=age,
        values={"open": count},
        message=f"the oldest of {count} open transaction(s) is {_s(age)} old",
    )


def _measure(check: DbHealthCheck, kind: str, url: str) -> Measurement:
    from sqlalchemy import create_engine

    engine = create_engine(engine_url(kind, url))
    try:
        with engine.connect() as conn:
            cur = conn.connection.cursor()
            try:
                return _dispatch(check, kind, cur)
            finally:
                cur.close()
    finally:
        engine.dispose()


def _dispatch(check: DbHealthCheck, kind: str, cur: Any) -> Measurement:
    metric = check.metric
    if kind == "postgres":
        if metric in REPLICATION:
            if check.measured_on == "primary":
                return _pg_primary_lag(check, cur)
            return _pg_replica_lag(check, cur)
        if metric == "connections":
            return _pg_connections(cur)
        if metric in ("lock_waits", "longest_lock_wait"):
            return _pg_locks(check, cur)
        return _pg_oldest(cur)
    if metric == "replication_lag":
        return _my_replica_lag(check, cur)
    if metric == "connections":
        return _my_connections(cur)
    if metric in ("lock_waits", "longest_lock_wait"):
        return _my_locks(check, cur)
    return _my_oldest(cur)


class DbHealthSource:
    source: ClassVar[str] = "db_health"

    async def measure(self, check: DbHealthCheck, ctx: CheckContext) -> Measurement:
        db = ctx.plan.targets.databases[check.database]
        problem = db_health_unsupported(check, db.kind)
        if problem:  # `tminus check` reports it first; a measurement never guesses
            return Measurement(error=problem)
        url = ctx.resolver.resolve(db.url)
        try:
            m: Measurement = await work.in_thread(_measure, check, db.kind, url)
        except Exception as exc:  # the driver's errors vary by database
            return Measurement(error=ctx.resolver.mask(db_error(exc)))
        m.message = ctx.resolver.mask(m.message)
        return m


SOURCE = DbHealthSource()
