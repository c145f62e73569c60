"""Issue #12, data: a backup retried after a crash removes the crashed attempt's partial
directory (and says so); ``verify_backup`` needs the privilege to create a scratch database,
and the preflight says so before anything runs — on real PostgreSQL and MariaDB."""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest

from tests.conftest import PG_ADMIN, Tm
from tminus.steps._data import DataTarget, scratch_preflight

HOUR_AGO = time.time() - 3600


def _crash_leftover(dest: Path, db: str, stamp: str) -> Path:
    """What a backup killed mid-dump leaves: its partial directory, named as BackupDir names
    it, with a half-written dump, untouched for an hour."""
    partial = dest / f".{stamp}-{db}.partial"
    (partial / "dump").mkdir(parents=True)
    (partial / "dump" / "toc.dat").write_bytes(b"half a dump")
    for p in (partial / "dump" / "toc.dat", partial / "dump", partial):
        os.utime(p, (HOUR_AGO, HOUR_AGO))
    return partial


def _backup_plan(url: str, dest: Path, *, verify: bool = False) -> str:
    extra = "      - {kind: verify_backup, from: db_backup}\n" if verify else ""
    return f"""
name: leftovers
environment: test
targets:
  databases:
    app: {{kind: postgres, url: "{url}"}}
phases:
  - name: seed
    steps:
      - kind: sql
        database: app
        statements: ["CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY)",
                     "INSERT INTO items VALUES (1) ON CONFLICT DO NOTHING"]
  - name: backup
    steps:
      - {{kind: backup, id: db_backup, database: app, dest: "{dest}"}}
{extra}"""


def test_retry_after_a_crash_removes_the_stale_partial(tm: Tm, pg_url: str) -> None:
    """Mutation tried: skip ``remove_stale_partials`` in ``BackupDir.__init__``: the crashed
    attempt's directory stays and the output does not mention it (this test fails)."""
    db = pg_url.rsplit("/", 1)[-1]
    dest = tm.cwd / "bk"
    stale = _crash_leftover(dest, db, "20260101T000000Z")
    # a partial directory a live writer holds (locked), however old: never touched
    live = _crash_leftover(dest, db, "20260101T000001Z")
    # another database's leftover: not this backup's
    other = _crash_leftover(dest, db + "x", "20260101T000002Z")
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (tm.cwd / "p.yaml").write_text(_backup_plan(pg_url, dest))
        proc = tm("run", "p.yaml", timeout=300)
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not stale.exists()
    assert live.exists() and other.exists()
    out = proc.stdout + proc.stderr
    assert "removed the partial backup directory of an interrupted attempt" in out, out
    assert stale.name in out
    (done,) = [p for p in dest.iterdir() if not p.name.startswith(".")]
    assert (done / "manifest.json").exists()


def test_a_recently_written_partial_is_left_alone(tm: Tm, pg_url: str) -> None:
    """An unlocked partial directory written to a moment ago may belong to a writer that does
    not lock (an older tminus): kept."""
    db = pg_url.rsplit("/", 1)[-1]
    dest = tm.cwd / "bk"
    recent = _crash_leftover(dest, db, "20260101T000000Z")
    (recent / "dump" / "0001.dat").write_bytes(b"still being written")
    (tm.cwd / "p.yaml").write_text(_backup_plan(pg_url, dest))
    proc = tm("run", "p.yaml", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recent.exists()
    assert "interrupted attempt" not in proc.stdout + proc.stderr


@pytest.fixture
def pg_role_without_createdb(pg_url: str) -> Iterator[str]:
    """A real login role without CREATEDB on the trust-auth cluster; its URL to pg_url."""
    role = f"tminus_nocdb_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        yield pg_url.replace("postgres@", f"{role}@", 1)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_verify_backup_preflight_needs_createdb_on_postgres(
    tm: Tm, pg_url: str, pg_role_without_createdb: str
) -> None:
    """Mutation tried: return [] from ``scratch_preflight``: the deploy runs its steps and
    fails only at the verification (this test fails: exit 1, the seed step ran)."""
    url = pg_role_without_createdb
    role = url.split("://", 1)[1].split("@", 1)[0]
    (tm.cwd / "p.yaml").write_text(_backup_plan(url, tm.cwd / "bk", verify=True))
    proc = tm("run", "p.yaml", timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "nothing was run" in proc.stderr
    assert f"database app: role {role} cannot create databases (no CREATEDB)" in proc.stderr
    assert f"ALTER ROLE {role} CREATEDB" in proc.stderr
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT to_regclass('public.items')").fetchone()
        assert row is not None and row[0] is None, "nothing ran"
    # with the privilege (or as a superuser) there is nothing to report
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'ALTER ROLE "{role}" CREATEDB')
    assert scratch_preflight(DataTarget("app", "database", "postgres", url)) == []
    assert scratch_preflight(DataTarget("app", "database", "postgres", pg_url)) == []


def test_verify_backup_preflight_needs_create_on_mariadb(mysql_url: str) -> None:
    schema = mysql_url.rsplit("/", 1)[-1]
    user = f"tm_nc_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{user}'")
            cur.execute(f"GRANT SELECT, SHOW VIEW ON `{schema}`.* TO '{user}'@'%'")
        url = f"mysql://{user}:pw-{user}@127.0.0.1:3306/{schema}"
        (problem,) = scratch_preflight(DataTarget("app", "database", "mariadb", url))
        assert problem.startswith(f"database app: account {user}@% has no CREATE privilege")
        assert f"pw-{user}" not in problem
        with admin.cursor() as cur:
            cur.execute(f"GRANT CREATE, DROP ON `tminus\\_verify\\_%`.* TO '{user}'@'%'")
        assert scratch_preflight(DataTarget("app", "database", "mariadb", url)) == []
        with admin.cursor() as cur:
            cur.execute(f"REVOKE CREATE, DROP ON `tminus\\_verify\\_%`.* FROM '{user}'@'%'")
            cur.execute(f"GRANT CREATE ON *.* TO '{user}'@'%'")
        assert scratch_preflight(DataTarget("app", "database", "mariadb", url)) == []
        assert scratch_preflight(DataTarget("app", "database", "mariadb", mysql_url)) == []
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()
