"""``source: sql`` values judged as numbers on every real database (issue #12).

PostgreSQL's ``numeric`` and MariaDB's ``DECIMAL`` (every decimal literal, ``avg()``) arrive
from the drivers as ``decimal.Decimal``; numeric text (``CAST(... AS CHAR)``) as ``str``.
Mutation tried: drop the ``plain_number`` call in ``judge`` and in the sql provider (the
value stays a ``Decimal``, which ``Condition.evaluate`` does not read as a number): the
Decimal tests fail (a healthy deploy would be rolled back)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tminus.sources.base import CheckResult

from .conftest import measure, plan_with

MARIADB = "mysql://root@127.0.0.1:3306/mysql"


def sql_check(url_kind: str, url: str, query: str, **conditions: Any) -> CheckResult:
    plan = plan_with(
        {"c": {"source": "sql", "database": "db", "query": query, **conditions}},
        databases={"db": {"kind": url_kind, "url": url}},
    )
    return asyncio.run(measure(plan, "c"))


def _targets(pg_url: str, tmp_path: Path) -> list[tuple[str, str]]:
    return [
        ("mariadb", MARIADB),
        ("postgres", pg_url),
        ("sqlite", f"sqlite:///{tmp_path / 'x.db'}"),
    ]


def test_decimal_literal_meets_the_condition_everywhere(pg_url: str, tmp_path: Path) -> None:
    """``SELECT 0.9708`` with ``expect: "> 0.9"`` passes on MariaDB, PostgreSQL and SQLite."""
    for kind, url in _targets(pg_url, tmp_path):
        r = sql_check(kind, url, "SELECT 0.9708", expect="> 0.9", warn="< 0.95")
        assert (r.status, r.level) == ("passed", "ok"), (kind, r)
        assert r.message == "0.9708", (kind, r.message)


def test_a_failing_decimal_comparison_still_fails(pg_url: str, tmp_path: Path) -> None:
    for kind, url in _targets(pg_url, tmp_path):
        r = sql_check(kind, url, "SELECT 0.8708", expect="> 0.9")
        assert (r.status, r.level) == ("failed", "critical"), (kind, r)
        assert "expected > 0.9" in r.message
        crit = sql_check(kind, url, "SELECT 0.9708", critical=">= 97%")
        assert (crit.status, crit.level) == ("failed", "critical"), (kind, crit)
        warn = sql_check(kind, url, "SELECT 0.9708", warn="between 0.9 and 1")
        assert (warn.status, warn.level) == ("passed", "warn"), (kind, warn)


def test_postgres_avg_is_a_number(pg_url: str) -> None:
    q = "SELECT avg(x) FROM (VALUES (1), (2), (4)) AS t(x)"  # numeric 2.333...
    ok = sql_check("postgres", pg_url, q, expect="< 10")
    assert (ok.status, ok.value) == ("passed", pytest.approx(7 / 3)), ok
    bad = sql_check("postgres", pg_url, q, expect="< 2")
    assert bad.status == "failed", bad
    # an integral numeric is shown (and compared) as an integer
    s = sql_check("postgres", pg_url, "SELECT sum(x::numeric) FROM (VALUES (1), (2)) AS t(x)")
    assert (s.status, s.value, s.message) == ("passed", 3, "first value 3"), s


def test_mariadb_numeric_text_and_avg(pg_url: str) -> None:
    text = sql_check("mariadb", MARIADB, "SELECT CAST(0.9708 AS CHAR)", expect="> 0.9")
    assert text.status == "passed", text
    avg = sql_check(
        "mariadb",
        MARIADB,
        "SELECT avg(x) FROM (SELECT 1 AS x UNION SELECT 2) AS t",
        expect="== 1.5",
    )
    assert avg.status == "passed", avg
