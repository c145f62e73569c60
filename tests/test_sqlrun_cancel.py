"""A cancelled SQL step stops on the server and never commits (issue #11), on real servers.

Each test cancels the task running the sql step's statements (``work.in_thread`` over
``sqlrun.run_statements``, what ``kind: sql`` does) while a statement runs, then checks that the
cancellation came back at once, the server runs nothing of it any more, and the row inserted
earlier in the same transaction never appears."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tminus import work
from tminus.sqlrun import run_query, run_statements


def _cancel_after(kind: str, url: str, statements: list[str], delay: float = 0.5) -> float:
    """Run the statements in one transaction, cancel after ``delay``; the cancel latency."""

    async def go() -> float:
        task = asyncio.ensure_future(
            work.in_thread(run_statements, kind, url, statements, transaction=True)
        )
        await asyncio.sleep(delay)
        assert not task.done(), task
        start = time.monotonic()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return time.monotonic() - start
        raise AssertionError("the statements were not cancelled")

    return asyncio.run(go())


def test_postgres_cancel_stops_the_statement_and_rolls_back(pg_url: str) -> None:
    """Mutations: ``dbapi_canceller`` returning None for psycopg (no server cancel) makes the
    latency ~3 s and leaves pg_sleep active; ``asyncio.to_thread`` instead of ``in_thread``
    (today's code) leaves it running, and the row commits."""
    run_statements("postgres", pg_url, ["CREATE TABLE t (a int)"], transaction=True)
    latency = _cancel_after(
        "postgres", pg_url, ["INSERT INTO t VALUES (1)", "SELECT pg_sleep(3) /* tminus-c */"]
    )
    assert latency < 1.5, latency
    active = run_query(
        "postgres",
        pg_url,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%tminus-c */' "
        "AND state = 'active' AND pid <> pg_backend_pid()",
    )
    assert active == [(0,)]
    time.sleep(3.5)  # past the end of the pg_sleep it would have run
    assert run_query("postgres", pg_url, "SELECT count(*) FROM t") == [(0,)]


def test_postgres_sessions_check_for_a_vanished_client(pg_url: str) -> None:
    """Mutation: remove the ``_on_connect`` hook: the setting stays at its default 0."""

    async def go() -> list[tuple[object, ...]]:
        return await work.in_thread(
            run_query,
            "postgres",
            pg_url,
            "SELECT current_setting('client_connection_check_interval')",
        )

    assert asyncio.run(go()) == [("2s",)]


def test_mariadb_cancel_kills_the_query_and_rolls_back(mysql_url: str) -> None:
    """Mutation: no KILL QUERY callback: the cancellation takes the full 3 s SLEEP (fails).
    MariaDB reports a killed SLEEP as an error, so the ``_check_cancelled`` guards (for MySQL,
    where it returns 1) are not what this test catches: removing them alone still passes."""
    run_statements("mysql", mysql_url, ["CREATE TABLE t (a int) ENGINE=InnoDB"], transaction=True)
    latency = _cancel_after(
        "mysql", mysql_url, ["INSERT INTO t VALUES (1)", "SELECT SLEEP(3) /* tminus-c */"]
    )
    assert latency < 1.5, latency
    active = run_query(
        "mysql",
        mysql_url,
        "SELECT count(*) FROM information_schema.processlist "
        "WHERE info LIKE '%%SLEEP(3) /* tminus-c */%%' AND info NOT LIKE '%%processlist%%'",
    )
    assert active == [(0,)]
    time.sleep(3.5)
    assert run_query("mysql", mysql_url, "SELECT count(*) FROM t") == [(0,)]


def test_sqlite_cancel_interrupts_the_statement(tmp_path: Path) -> None:
    """Mutation: ``dbapi_canceller`` returning None for sqlite3: the 10^9-row CTE runs on and
    the cancellation ends in WorkNotStopped after the bound instead."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    run_statements("sqlite", url, ["CREATE TABLE t (a int)"], transaction=True)
    latency = _cancel_after(
        "sqlite",
        url,
        [
            "INSERT INTO t VALUES (0)",
            "INSERT INTO t WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
            "WHERE x < 1000000000) SELECT x FROM c",
        ],
    )
    assert latency < 1.5, latency
    assert run_query("sqlite", url, "SELECT count(*) FROM t") == [(0,)]
