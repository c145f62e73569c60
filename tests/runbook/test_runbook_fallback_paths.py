"""The manual fallback names a backup's files exactly as the backup drivers write them: the
restore command's path, its time stamp read as a pattern, matches the dump of a real backup
made by the driver (PostgreSQL and MariaDB on this machine, a files backup of a directory).

The plan's database target is named ``appdb`` while the database is ``tminus_fb_<hex>``: the
drivers label a backup with the database's name in the URL, not the target's name (which the
fallback used to print). The files backup's path is a variable (``${data_dir}``), so its label
is taken from the resolved path, as the driver takes it from the path it is given.

Mutations tried: the fallback's database label taken from the target's name again
(``_db_name`` returning ``name``): the PostgreSQL and MariaDB tests fail (``…-appdb/dump`` does
not match ``…-tminus_fb_…/dump``); the files label taken from the path as written (no
``RESOLVE``): the files test fails (``<last-part-of-${data_dir}>``); the MariaDB dump named
``dump.sql`` instead of ``dump.sql.gz`` in ``DUMP_FILES``: the MariaDB test fails.

PostgreSQL and MariaDB must be running (127.0.0.1:5432 as postgres, 127.0.0.1:3306 as root);
a server that cannot be reached fails the test.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from click.testing import CliRunner

from tminus.backups import backup_dir as driver_dirs
from tminus.backups.files import ARCHIVE
from tminus.backups.mysql import DUMP_FILE as MYSQL_DUMP
from tminus.backups.postgres import DUMP_DIR as PG_DUMP
from tminus.backups.registry import get_driver
from tminus.backups.sqlite import DB_FILE as SQLITE_DUMP
from tminus.cli.app import cli
from tminus.plan import _runbook_backups as names

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN}: {exc}")


def _my_admin(db: str | None = None) -> Any:
    try:
        return pymysql.connect(
            host="127.0.0.1", port=3306, user="root", database=db, autocommit=True
        )
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"MariaDB is not reachable at 127.0.0.1:3306: {exc}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"tminus_fb_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20) g")
        yield url
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def my_url() -> Iterator[str]:
    name = f"tminus_fb_{uuid.uuid4().hex[:10]}"
    admin = _my_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        with _my_admin(name).cursor() as cur:
            cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name TEXT) ENGINE=InnoDB")
            cur.execute("INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three')")
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


PLAN = """\
name: fallback-paths
environment: test
variables:
  data_dir: {data}
targets:
  databases:
    appdb:
      kind: {kind}
      url: {url}
  paths:
    data:
      path: ${{data_dir}}
phases:
  - name: Data
    steps:
      - kind: backup
        id: db_backup
        database: appdb
        dest: {dest}
      - kind: backup
        id: files_backup
        path: data
        dest: {dest}
    rollback:
      - kind: restore
        name: Put the database back
        from: db_backup
        database: appdb
      - kind: restore
        name: Put the files back
        from: files_backup
        path: data
"""


def _runbook(tmp_path: Path, kind: str, url: str) -> str:
    data = tmp_path / "app-data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "a.txt").write_text("a")
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN.format(kind=kind, url=url, data=data, dest=tmp_path / "backups"))
    res = CliRunner().invoke(cli, ["render", str(plan), "--format", "md"])
    assert res.exit_code == 0, res.output
    return res.output


def _pattern(path: str) -> re.Pattern[str]:
    """The fallback's path with its stamp as the drivers write it (a ``-N`` suffix is only
    added to a second backup of the same label in the same second)."""
    stamp = r"\d{8}T\d{6}Z"
    return re.compile(re.escape(path).replace(re.escape(names.STAMP), stamp))


def _newest(dest: Path, label_glob: str, file: str) -> Path:
    found = sorted(dest.glob(f"*-{label_glob}/{file}"))
    assert found, f"no backup of {label_glob} under {dest}"
    return found[-1]


def test_the_layout_is_the_drivers(tmp_path: Path) -> None:
    """The names stated in plan/_runbook_backups.py are the drivers' (plan cannot import them)."""
    assert names.DUMP_FILES["postgres"] == PG_DUMP
    assert names.DUMP_FILES["mysql"] == names.DUMP_FILES["mariadb"] == MYSQL_DUMP
    assert names.DUMP_FILES["sqlite"] == SQLITE_DUMP
    assert names.DUMP_FILES["files"] == ARCHIVE
    for label in ("svetubd", "my db/ü", "..x..", "", "a" * 80):
        assert names.slug(label) == driver_dirs._slug(label)
    bdir = driver_dirs.BackupDir(tmp_path, "my db")
    try:
        assert _pattern(f"{tmp_path}/{names.dir_name('my db')}").fullmatch(str(bdir.final))
    finally:
        bdir.discard()


def test_postgres_restore_path_matches_the_drivers_backup(pg_url: str, tmp_path: Path) -> None:
    md = _runbook(tmp_path, "postgres", pg_url)
    restore = re.search(r"pg_restore .* -d \S+ (\S+)$", md, re.M)
    assert restore is not None, md
    dump = re.search(r"pg_dump -Fd -j 2 -f (\S+) ", md)
    assert dump is not None and dump[1] == restore[1]
    assert "-appdb/" not in restore[1]  # the target's name, not the database's
    get_driver("postgres").backup(pg_url, tmp_path / "backups")
    written = _newest(tmp_path / "backups", "tminus_fb_*", PG_DUMP)
    assert written.is_dir() and (written.parent / names.MANIFEST).is_file()
    assert _pattern(restore[1]).fullmatch(str(written)), (restore[1], written)
    _files_match(md, tmp_path)


def test_mariadb_restore_path_matches_the_drivers_backup(my_url: str, tmp_path: Path) -> None:
    md = _runbook(tmp_path, "mysql", my_url)
    schema = my_url.rsplit("/", 1)[1]
    restore = re.search(rf"gunzip -c (\S+) \| mariadb {schema} ", md)
    assert restore is not None, md
    assert f"--triggers {schema} | gzip > {restore[1]} " in md  # the dump writes that file
    get_driver("mysql").backup(my_url, tmp_path / "backups")
    written = _newest(tmp_path / "backups", schema, MYSQL_DUMP)
    assert written.is_file() and (written.parent / names.MANIFEST).is_file()
    assert _pattern(restore[1]).fullmatch(str(written)), (restore[1], written)


def _files_match(md: str, tmp_path: Path) -> None:
    restore = re.search(r"tar -xzf (\S+) -C (\S+)$", md, re.M)
    assert restore is not None, md
    assert restore[2] == str(tmp_path / "app-data")
    get_driver("files").backup(str(tmp_path / "app-data"), tmp_path / "backups")
    written = _newest(tmp_path / "backups", "app-data", ARCHIVE)
    assert _pattern(restore[1]).fullmatch(str(written)), (restore[1], written)
