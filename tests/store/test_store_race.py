"""Creating the schema is safe when several processes open a brand-new store at once.

Before the fix: on SQLite about 1 round in 10 failed with ``table deploys already exists``; on
PostgreSQL about half the rounds failed with a UniqueViolation on ``alembic_version``."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN
from tminus.store.store import HEAD_REVISION, Store

# Each child imports tminus once, then opens one brand-new store per round, all children at
# the same instant: they spin until the round's barrier file appears.
CHILD = r"""
import os, sys, time, traceback
from pathlib import Path
from tminus.store.store import Store
work = Path(sys.argv[1]); urls = sys.argv[2:]
(work / f"ready.{os.getpid()}").touch()
for n, url in enumerate(urls):
    go = work / f"go.{n}"
    while not go.exists():
        time.sleep(0.0005)
    try:
        Store(url).close()
        out = "ok"
    except BaseException:
        out = "FAILED " + traceback.format_exc()
    tmp = work / f"tmp.{n}.{os.getpid()}"
    tmp.write_text(out)
    tmp.rename(work / f"result.{n}.{os.getpid()}")  # whole, or not there
"""


def _race(work: Path, urls: list[str], procs: int) -> list[list[str]]:
    """Start ``procs`` children; per url, release them all at once; the results per round."""
    work.mkdir()
    env_ok = [sys.executable, "-c", CHILD, str(work), *urls]
    children = [
        subprocess.Popen(env_ok, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(procs)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(work.glob("ready.*"))) < procs:
            assert time.monotonic() < deadline, "children did not start"
            time.sleep(0.02)
        rounds: list[list[str]] = []
        for n in range(len(urls)):
            (work / f"go.{n}").touch()
            while len(list(work.glob(f"result.{n}.*"))) < procs:
                assert time.monotonic() < deadline, f"round {n} did not finish"
                time.sleep(0.01)
            rounds.append([p.read_text() for p in sorted(work.glob(f"result.{n}.*"))])
        for c in children:
            assert c.wait(timeout=30) == 0, c.stderr.read() if c.stderr else ""
        return rounds
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
                c.wait()


def _at_head(url: str) -> None:
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            revs = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
            assert revs == [HEAD_REVISION]
            assert conn.exec_driver_sql("SELECT count(*) FROM deploys").scalar() == 0
    finally:
        store.close()


def test_concurrent_first_opens_of_a_sqlite_store(tmp_path: Path) -> None:
    """10 processes x 12 rounds, each round a brand-new SQLite file opened by all at once.

    Mutation: remove the ``flock`` of ``<db>.lock`` in ``Store._migrate`` (migrate unlocked):
    some rounds fail with ``table deploys already exists``."""
    urls = [f"sqlite:///{tmp_path}/db{n}/state.db" for n in range(12)]
    rounds = _race(tmp_path / "work", urls, procs=10)
    failed = [r for rnd in rounds for r in rnd if r != "ok"]
    assert not failed, failed[0]
    for url in urls:
        _at_head(url)


@pytest.fixture
def pg_urls() -> Iterator[list[str]]:
    import psycopg

    names = [f"tminus_race_{uuid.uuid4().hex[:10]}" for _ in range(6)]
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield [PG_ADMIN.rsplit("/", 1)[0] + f"/{name}" for name in names]
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_concurrent_first_opens_of_a_postgres_store(tmp_path: Path, pg_urls: list[str]) -> None:
    """8 processes x 6 rounds, each round a brand-new PostgreSQL database opened by all at once.

    Mutation: drop the ``pg_advisory_lock`` in ``Store._migrate``: rounds fail with a
    UniqueViolation on ``alembic_version`` (or ``relation ... already exists``)."""
    rounds = _race(tmp_path / "work", pg_urls, procs=8)
    failed = [r for rnd in rounds for r in rnd if r != "ok"]
    assert not failed, failed[0]
    for url in pg_urls:
        _at_head(url)
