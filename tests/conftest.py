"""Shared fixtures: run the real `tminus` CLI in a subprocess, and fresh PostgreSQL databases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests start `python -m tminus` hundreds of times: let those processes cache bytecode (some
# machines set PYTHONDONTWRITEBYTECODE, which makes every start recompile every module).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

PG_ADMIN = os.environ.get("TMINUS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


class Tm:
    """Runs `python -m tminus` in a working directory with a given environment."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.env = {**os.environ, "TMINUS_OPERATOR": "alice", **(env or {})}
        self.env.pop("TMINUS_STATE", None)

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        check: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "tminus.testing.seam", *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check is not None:
            assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    def json(self, *args: str) -> Any:
        proc = self(*args, "--output", "json", check=0)
        return json.loads(proc.stdout)

    def latest(self) -> dict[str, Any]:
        rows = self.json("list")
        assert rows, "no deploys"
        return dict(rows[0])


@pytest.fixture
def tm(tmp_path: Path) -> Tm:
    return Tm(tmp_path)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's cluster; dropped afterwards."""
    import psycopg

    name = f"tminus_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:  # fail loudly: `make test` starts PostgreSQL
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN}: {exc}")
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


MYSQL_ADMIN = os.environ.get("TMINUS_TEST_MYSQL", "mysql://root@127.0.0.1:3306")


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB/MySQL schema on the machine's server; dropped afterwards."""
    import pymysql

    name = f"tminus_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = pymysql.connect(
            host="127.0.0.1", port=3306, user="root", connect_timeout=5, autocommit=True
        )
    except pymysql.MySQLError as exc:  # fail loudly: `make test` starts MariaDB
        pytest.fail(f"MariaDB is not reachable at 127.0.0.1:3306: {exc}")
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield f"{MYSQL_ADMIN}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


def new_deploy(store: Any, plan: str = "p", environment: str = "prod") -> str:
    """A deploy row made straight in a store (no plan run): for tests of the store and of
    what reads it."""
    return str(
        store.create_deploy(
            plan_name=plan,
            environment=environment,
            plan_path=f"{plan}.yaml",
            plan_text=f"name: {plan}\n",
            plan_hash="h",
            started_by="alice",
            overrides={},
        )
    )


# --- a real headless Chromium (Debian's ``chromium``, through Playwright): the dashboard's
# tests and the runbook's print test
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (``executable_path``): fails, does
    not skip, when it is not installed."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium is not installed ({CHROMIUM}): run scripts/test-services.sh")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
