"""``source: db_health`` against real databases (issue #19, item 2): a PostgreSQL primary and
its streaming replica started by the test (:mod:`tminus.testing.pgreplica`), the machine's
PostgreSQL (a fresh database per test) and the machine's MariaDB. No mocks.

Mutations tried (each makes a test here fail, then restored):
- in ``_pg_primary_lag``, return ``Measurement(value=0)`` when ``pg_stat_replication`` is
  empty (the seed's ``COALESCE(…, 0)``): ``test_a_primary_without_replica_is_not_zero_lag``
  fails (0 s of lag passed);
- in ``_pg_replica_lag``, drop the ``pg_is_in_recovery()`` test: the replica-side check on a
  primary reads NULL/0 instead of "not a replica" (same test fails);
- in ``_pg_replica_lag``, treat every replica as caught up (``behind_b == 0`` → ``True``):
  ``test_lag_grows_while_replay_is_paused`` never sees WARN or CRITICAL;
- count lock waits and open transactions server-wide (drop ``datname = current_database()``
  / ``_MY_OURS`` in ``db_health``): another database's check counts the waiter (both lock
  tests fail); the same dropped from the oldest-transaction queries alone: each lock test
  fails on the other database's ``oldest_transaction`` (PostgreSQL and MariaDB in turn);
- in ``lint_db_health``, drop the ``pg_is_in_recovery`` exemption or the warning:
  ``test_check_warns_on_raw_replay_timestamp_sql`` fails.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pymysql  # type: ignore[import-untyped]
import pytest
from psycopg import sql

from tminus.plan.loader import load_plan_text
from tminus.sources.base import CheckResult
from tminus.testing.mariareplica import MariaReplicaError, MariaReplication
from tminus.testing.pgreplica import PgPrimary, PgReplica, PgReplicaError

from .conftest import measure, plan_with

MARIADB = "mysql://root@127.0.0.1:3306/mysql"


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[PgPrimary, PgReplica]]:
    """A primary and a streaming replica of it (fails, never skips, when they cannot start)."""
    try:
        with PgPrimary() as primary, PgReplica(primary) as replica:
            yield primary, replica
    except PgReplicaError as exc:
        pytest.fail(f"the PostgreSQL primary/replica pair could not start: {exc}")


def health(kind: str, url: str, **fields: Any) -> CheckResult:
    plan = plan_with(
        {"c": {"source": "db_health", "database": "db", **fields}},
        databases={"db": {"kind": kind, "url": url}},
    )
    return asyncio.run(measure(plan, "c"))


def lag(url: str, on: str, **levels: Any) -> CheckResult:
    return health("postgres", url, metric="replication_lag", measured_on=on, **levels)


def test_lag_grows_while_replay_is_paused(replicated: tuple[PgPrimary, PgReplica]) -> None:
    """Paused replay with writes on the primary: the lag, read on the replica and on the
    primary, goes WARN, then CRITICAL, and passes again once replay resumes."""
    primary, replica = replicated
    levels = {"warn": "> 1s", "critical": "> 3s"}
    with (
        psycopg.connect(primary.url, autocommit=True) as p,
        psycopg.connect(replica.url, autocommit=True) as r,
    ):
        p.execute("CREATE TABLE IF NOT EXISTS ticks (at timestamptz DEFAULT now())")
        p.execute("INSERT INTO ticks DEFAULT VALUES")
        _until(lambda: lag(replica.url, "replica", **levels).value == 0, "caught up")
        assert lag(primary.url, "primary", **levels).status == "passed"
        stop = threading.Event()

        def write() -> None:
            with psycopg.connect(primary.url, autocommit=True) as w:
                while not stop.is_set():
                    w.execute("INSERT INTO ticks DEFAULT VALUES")
                    stop.wait(0.2)

        r.execute("SELECT pg_wal_replay_pause()")
        writer = threading.Thread(target=write)
        writer.start()
        try:
            seen: dict[str, set[str]] = {"replica": set(), "primary": set()}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not all("critical" in s for s in seen.values()):
                for on, url in (("replica", replica.url), ("primary", primary.url)):
                    res = lag(url, on, **levels)
                    assert res.status in ("passed", "failed"), res
                    seen[on].add(res.level)
                    if res.level == "warn":
                        assert "WARN (> 1s)" in res.message, res
                time.sleep(0.3)
            assert seen["replica"] >= {"warn", "critical"}, seen
            assert seen["primary"] >= {"warn", "critical"}, seen
            crit = lag(replica.url, "replica", **levels)
            assert (crit.status, crit.level) == ("failed", "critical"), crit
            assert crit.value > 3
            bytes_behind = health(
                "postgres", primary.url, metric="replication_lag_bytes", measured_on="primary"
            )
            assert bytes_behind.value > 0, bytes_behind
        finally:
            r.execute("SELECT pg_wal_replay_resume()")
            stop.set()
            writer.join(10)
        _until(lambda: lag(replica.url, "replica", **levels).level == "ok", "replica ok")
        _until(lambda: lag(primary.url, "primary", **levels).level == "ok", "primary ok")
        ok = lag(replica.url, "replica", **levels)
        assert (ok.status, ok.level) == ("passed", "ok"), ok


def test_a_stopped_wal_receiver_fails_on_the_replica(
    replicated: tuple[PgPrimary, PgReplica],
) -> None:
    """Measured on a replica whose WAL receiver is stopped (no primary_conninfo), the check
    fails; it does not pass on the last replayed position. Mutation: skip the receiver's
    status test in ``_pg_replica_lag``: the check passes with 0 s."""
    _, replica = replicated
    with psycopg.connect(replica.url, autocommit=True) as r:
        row = r.execute("SHOW primary_conninfo").fetchone()
        assert row is not None
        conninfo = str(row[0])
        r.execute("ALTER SYSTEM SET primary_conninfo = ''")
        r.execute("SELECT pg_reload_conf()")
        try:
            _until(
                lambda: lag(replica.url, "replica", expect="< 10s").status == "failed",
                "failed",
            )
            res = lag(replica.url, "replica", expect="< 10s")
            assert "WAL receiver is not streaming" in res.message, res
        finally:
            r.execute(
                sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(sql.Literal(conninfo))
            )
            r.execute("SELECT pg_reload_conf()")
    replica.wait_streaming()


def test_a_primary_without_replica_is_not_zero_lag(
    replicated: tuple[PgPrimary, PgReplica],
) -> None:
    """No replica connected (on a primary), or "not a replica": inconclusive by default,
    failed with ``no_replica: failed``; never 0 s of lag that passes."""
    primary, replica = replicated
    with PgPrimary() as alone:
        res = lag(alone.url, "primary", expect="< 5s")
        assert (res.status, res.value) == ("inconclusive", None), res
        assert "no replica is connected" in res.message
        failed = lag(alone.url, "primary", expect="< 5s", no_replica="failed")
        assert (failed.status, failed.level) == ("failed", "critical"), failed
        assert "no replica is connected" in failed.message
        # no conditions but warn/critical: still failed, not passed
        only_crit = lag(alone.url, "primary", critical="> 5s", no_replica="failed")
        assert only_crit.status == "failed", only_crit
    # a replica-side check pointed at a primary
    not_replica = lag(primary.url, "replica", expect="< 5s")
    assert not_replica.status == "inconclusive", not_replica
    assert "not a replica" in not_replica.message
    # a primary-side check pointed at a replica
    wrong = lag(replica.url, "primary", expect="< 5s")
    assert wrong.status == "failed" and "is a replica" in wrong.message, wrong


def test_postgres_connections_locks_and_long_transactions(pg_url: str) -> None:
    """Connection use as a fraction of max_connections; a session waiting on a lock another
    holds; a transaction left open."""
    base = health("postgres", pg_url, metric="connections", warn="> 99%")
    assert 0 < base.value < 1, base
    with psycopg.connect(pg_url) as holder, psycopg.connect(pg_url, autocommit=True) as waiter:
        holder.execute("CREATE TABLE IF NOT EXISTS t (x int)")
        holder.commit()
        more = health("postgres", pg_url, metric="connections")
        assert more.value > base.value, (base, more)
        holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        blocked = threading.Thread(
            target=lambda: waiter.execute("SET lock_timeout = '8s'; SELECT * FROM t"),
            daemon=True,
        )
        blocked.start()
        time.sleep(1.2)
        waits = health("postgres", pg_url, metric="lock_waits", critical=">= 1")
        assert (waits.status, waits.value) == ("failed", 1), waits
        with _other_pg_database(pg_url) as other:  # another database of the same server
            assert health("postgres", other, metric="lock_waits").value == 0
            assert health("postgres", other, metric="oldest_transaction").value == 0
        longest = health("postgres", pg_url, metric="longest_lock_wait", warn="> 1s")
        assert longest.level == "warn" and 1 < longest.value < 8, longest
        old = health("postgres", pg_url, metric="oldest_transaction", critical="> 1s")
        assert old.status == "failed" and old.value > 1, old
        holder.rollback()
        blocked.join(10)
    after = health("postgres", pg_url, metric="lock_waits", expect="== 0")
    assert after.status == "passed", after


def test_mariadb_connections_locks_and_long_transactions(mysql_url: str) -> None:
    def conn() -> Any:
        return pymysql.connect(
            host="127.0.0.1", port=3306, user="root", database=db, autocommit=False
        )

    db = mysql_url.rsplit("/", 1)[1]
    base = health("mariadb", mysql_url, metric="connections", expect="< 100%")
    assert base.status == "passed" and 0 < base.value < 1, base
    holder = conn()
    try:
        with holder.cursor() as cur:
            cur.execute("CREATE TABLE t (x int PRIMARY KEY) ENGINE=InnoDB")
            cur.execute("INSERT INTO t VALUES (1)")
            holder.commit()
            cur.execute("SELECT * FROM t WHERE x = 1 FOR UPDATE")

        def wait() -> None:
            waiter = conn()
            try:
                with waiter.cursor() as c:
                    c.execute("SET innodb_lock_wait_timeout = 8")
                    c.execute("UPDATE t SET x = 2 WHERE x = 1")
                waiter.rollback()
            finally:
                waiter.close()

        blocked = threading.Thread(target=wait, daemon=True)
        blocked.start()
        time.sleep(1.2)
        waits = health("mariadb", mysql_url, metric="lock_waits", critical=">= 1")
        assert (waits.status, waits.value) == ("failed", 1), waits
        with _other_my_database(mysql_url) as other:  # another database of the same server
            assert health("mariadb", other, metric="lock_waits").value == 0
            assert health("mariadb", other, metric="oldest_transaction").value == 0
        longest = health("mariadb", mysql_url, metric="longest_lock_wait", warn="> 1s")
        assert longest.level == "warn" and 1 < longest.value < 8, longest
        old = health("mariadb", mysql_url, metric="oldest_transaction", critical="> 1s")
        assert old.status == "failed" and old.value > 1, old
        holder.rollback()
        blocked.join(10)
        assert not blocked.is_alive()
    finally:
        holder.close()
    # InnoDB's INNODB_TRX is a cache refreshed at most every 0.1 s
    _until(
        lambda: health("mariadb", mysql_url, metric="lock_waits", expect="== 0").passed,
        "no lock waits",
        5,
    )


def test_mariadb_that_is_not_a_replica(mysql_url: str) -> None:
    """The machine's MariaDB has no replication configured: not "0 s behind"."""
    res = health("mariadb", mysql_url, metric="replication_lag", measured_on="replica")
    assert res.status == "inconclusive" and "not a replica" in res.message, res
    failed = health(
        "mariadb",
        mysql_url,
        metric="replication_lag",
        measured_on="replica",
        no_replica="failed",
        warn="> 5s",
    )
    assert failed.status == "failed", failed


def test_mariadb_replica_lag_and_stopped_sql_thread() -> None:
    """A MariaDB primary and replica started by the test: the replica's SQL thread blocked on
    a table lock while the primary writes makes Seconds_Behind_Master grow (WARN, then
    CRITICAL), passing again after UNLOCK TABLES; a stopped SQL thread fails the check (its
    lag is NULL: never 0). Mutation: in ``_my_replica_lag`` skip the IO/SQL thread test: the
    stopped thread reads as inconclusive, not failed."""
    try:
        repl = MariaReplication().__enter__()
    except MariaReplicaError as exc:
        pytest.fail(f"the MariaDB primary/replica pair could not start: {exc}")
    levels = {"warn": "> 1s", "critical": "> 3s"}

    def mlag(**more: Any) -> CheckResult:
        return health(
            "mariadb",
            repl.replica.url,
            metric="replication_lag",
            measured_on="replica",
            **levels,
            **more,
        )

    try:
        p, r = repl.primary.connect(), repl.replica.connect()
        with p.cursor() as pc, r.cursor() as rc:
            pc.execute("CREATE DATABASE app")
            pc.execute("CREATE TABLE app.t (x int) ENGINE=InnoDB")
            repl.wait_running()
            ok = mlag()
            assert (ok.status, ok.level, ok.value) == ("passed", "ok", 0), ok
            rc.execute("LOCK TABLES app.t WRITE")  # the SQL thread waits for this lock
            seen: set[str] = set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "critical" not in seen:
                pc.execute("INSERT INTO app.t VALUES (1)")
                res = mlag()
                if res.status != "inconclusive":  # NULL until the first event is read
                    seen.add(res.level)
                time.sleep(0.3)
            assert seen >= {"warn", "critical"}, seen
            rc.execute("UNLOCK TABLES")
            _until(lambda: mlag().level == "ok", "caught up")
            rc.execute("STOP SLAVE SQL_THREAD")
            stopped = mlag()
            assert (stopped.status, stopped.level) == ("failed", "critical"), stopped
            assert "SQL thread No" in stopped.message, stopped
            rc.execute("START SLAVE SQL_THREAD")
            _until(lambda: mlag().level == "ok", "running again")
        p.close()
        r.close()
    finally:
        repl.stop()


PLAN = """\
name: health-everywhere
targets:
  databases:
    main: {kind: postgres, url: "postgresql://postgres@127.0.0.1/x"}
    replica: {kind: mariadb, url: "mysql://root@127.0.0.1/x"}
  routers:
    lb: {kind: haproxy, socket: s, backend: b, pools: {blue: [a], green: [b]}}
checks:
  lag:
    source: db_health
    database: main
    metric: replication_lag
    measured_on: primary
    warn: "> 1s"
    critical: "> 10s"
  pool: {source: db_health, database: main, metric: connections, critical: "> 90%"}
phases:
  - name: one
    steps:
      - kind: canary
        router: lb
        stable: blue
        canary: green
        steps: [{weight: 10}, {weight: 100}]
        analysis:
          - lag
          - {source: db_health, database: replica, metric: replication_lag,
             measured_on: replica, critical: "> 30s"}
    verify:
      - pool
      - {source: db_health, database: main, metric: longest_lock_wait, critical: "> 5s"}
watch:
  schedule:
    - {start: 0s, every: 1m, for: 1h, checks: [lag, pool]}
rollback_triggers:
  - {name: lag, check: {use: lag, critical: "> 5s"}, action: rollback}
  - name: old transactions
    check: {source: db_health, database: main, metric: oldest_transaction, critical: "> 10m"}
    action: rollback
"""


def problems(text: str) -> list[tuple[str, str, str]]:
    res = load_plan_text(text)
    return [(p.severity, p.code, p.message) for p in res.problems]


def test_db_health_checks_pass_tminus_check_in_every_place() -> None:
    """verify, analysis, watch and rollback triggers: no error about the new source."""
    found = problems(PLAN)
    assert not [p for p in found if p[0] == "error"], found


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    measured_on: primary\n", "", "needs 'measured_on: primary' or"),
        ("metric: connections,", "metric: connections, measured_on: primary,", "applies only"),
        ("metric: connections,", "metric: connections, no_replica: failed,", "applies only"),
        ("measured_on: replica, critical", "measured_on: primary, critical", "read on the"),
        ("database: main, metric: longest", "database: mian, metric: longest", "'mian' is not"),
        ("metric: replication_lag,\n", "metric: replication_lag_bytes,\n", "PostgreSQL only"),
    ],
)
def test_tminus_check_rejects_fields_without_effect(old: str, new: str, message: str) -> None:
    assert old in PLAN
    found = problems(PLAN.replace(old, new, 1))
    assert any(sev == "error" and message in msg for sev, _, msg in found), found


def test_check_warns_on_raw_replay_timestamp_sql() -> None:
    """The seed's lag query reads 0 on a primary: a warning (not an error) with a hint."""
    raw = (
        "  raw_lag:\n    source: sql\n    database: main\n    query: >-\n"
        "      SELECT COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)\n"
        '    critical: "> 1"\n'
    )
    text = PLAN.replace("checks:\n", "checks:\n" + raw, 1)
    res = load_plan_text(text)
    found = [p for p in res.problems if p.code == "replication-lag-sql"]
    assert len(found) == 1 and found[0].severity == "warning", res.problems
    assert found[0].hint and "db_health" in found[0].hint
    assert res.ok  # a warning, not an error
    guarded = text.replace("SELECT COALESCE", "SELECT CASE WHEN pg_is_in_recovery() THEN 1 END, ")
    assert "replication-lag-sql" not in {p.code for p in load_plan_text(guarded).problems}


@contextmanager
def _other_pg_database(url: str) -> Iterator[str]:
    name = f"tminus_other_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def _other_my_database(url: str) -> Iterator[str]:
    name = f"tminus_other_{uuid.uuid4().hex[:10]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        yield url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def _until(cond: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"not {what} within {timeout:g}s")
