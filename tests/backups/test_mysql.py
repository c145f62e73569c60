"""MariaDB/MySQL driver against the real MariaDB server: backup, break, restore; damaged backups
refused; verify in a scratch schema; the locked snapshot handshake under concurrent writes; no
password anywhere."""

from __future__ import annotations

import gzip
import json
import re
import threading
import uuid
from pathlib import Path

import pytest

from tests.backups.conftest import (
    flip_byte,
    my_admin,
    my_content,
    my_exec,
    my_schemas,
    my_url_for,
    truncate,
    wrap_tools,
)
from tminus.backups import BackupError, Manifest, check_tools, get_driver
from tminus.backups.base import TableEntry
from tminus.backups.mysql import MysqlDriver, MysqlUrl


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_mariadb_and_mysql_share_a_driver() -> None:
    assert type(get_driver("mariadb")) is type(get_driver("mysql")) is MysqlDriver
    with pytest.raises(BackupError, match="no backup driver for kind 'maria'"):
        get_driver("maria")


def test_backup_writes_a_complete_manifest(my_seeded: str, tmp_path: Path) -> None:
    m = get_driver("mariadb").backup(my_seeded, tmp_path)
    bdir = tmp_path / m.id
    assert re.fullmatch(r"\d{8}T\d{6}Z-tminus_t_[0-9a-f]{10}", m.id)
    assert Manifest.load(bdir) == m
    assert {t.name: t.rows for t in m.tables} == {"audit": 1000, "orders": 5000, "users": 2000}
    assert ("orders", "orders_user_idx") in {(i.table, i.name) for i in m.indexes}
    cons = {c.name: c.definition for c in m.constraints}
    assert cons["orders_user_fk"] == "FOREIGN KEY user_id->users.id"
    assert "amount_positive" in cons
    seqs = {s.name: s for s in m.sequences}
    assert seqs["users.auto_increment"].last_value == 2000
    assert seqs["users.auto_increment"].max_value == 2000
    assert [f.path for f in m.files] == ["dump.sql.gz"]
    assert "MariaDB" in m.server_version and "Distrib" in m.tool_version
    assert m.details["charset"] and m.details["non_transactional"] == []
    dump = gzip.decompress((bdir / "dump.sql.gz").read_bytes()).decode()
    assert "CREATE DATABASE" not in dump and "USE `" not in dump
    assert "CREATE DEFINER" in dump and "TRIGGER" in dump  # triggers and routines included
    assert dump.rstrip().endswith("-- Dump completed")


def test_restore_after_breaking_the_data(my_seeded: str, tmp_path: Path) -> None:
    drv = get_driver("mysql")
    before = my_content(my_seeded)
    m = drv.backup(my_seeded, tmp_path)
    my_exec(
        _name(my_seeded),
        "DELETE FROM orders WHERE id % 10 = 0",
        "UPDATE users SET name = 'broken', score = 0 WHERE id < 100",
        "DROP TABLE audit",
        "CREATE TABLE added_later (id INT)",
    )
    assert my_content(my_seeded) != before
    drv.restore(m, tmp_path / m.id, my_seeded)
    assert my_content(my_seeded) == before
    assert drv.compare(m, my_seeded) == []
    conn = my_admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CALL `{_name(my_seeded)}`.count_users()")  # the routine came back
            assert cur.fetchone() == (2000,)
            cur.execute(
                f"INSERT INTO `{_name(my_seeded)}`.users (email, created_at) VALUES ('n@x', NOW())"
            )
            assert cur.lastrowid == 2001
    finally:
        conn.close()


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_backup_is_refused_and_target_untouched(
    my_seeded: str, tmp_path: Path, damage: str
) -> None:
    drv = get_driver("mysql")
    m = drv.backup(my_seeded, tmp_path)
    my_exec(_name(my_seeded), "DELETE FROM orders WHERE id > 4000", "DROP TABLE audit")
    broken = my_content(my_seeded)
    data = tmp_path / m.id / "dump.sql.gz"
    size = data.stat().st_size
    (flip_byte if damage == "flip" else truncate)(data)
    with pytest.raises(BackupError) as exc:
        drv.restore(m, tmp_path / m.id, my_seeded)
    msg = str(exc.value)
    assert "dump.sql.gz" in msg and "refusing" in msg
    if damage == "flip":
        assert "corrupted: sha256 expected" in msg
    else:
        assert f"truncated: expected {size} bytes, found {size // 2}" in msg
    assert my_content(my_seeded) == broken


def test_verify_passes_and_drops_the_scratch_schema(my_seeded: str, tmp_path: Path) -> None:
    drv = get_driver("mysql")
    m = drv.backup(my_seeded, tmp_path)
    report = drv.verify(m, tmp_path / m.id, my_seeded)
    assert report.ok, report.summary()
    assert report.checked_tables == 3 and report.checked_rows == 8000
    # Only this scratch schema is checked: other test runs may create their own meanwhile.
    assert report.scratch and report.scratch not in my_schemas()


def test_verify_reports_mismatches_and_drops_scratch(my_seeded: str, tmp_path: Path) -> None:
    drv = get_driver("mysql")
    m = drv.backup(my_seeded, tmp_path)
    m.tables = [
        t if t.name != "orders" else TableEntry(t.name, t.rows + 1, t.checksum) for t in m.tables
    ]
    name = f"tminus_t_scratch_{uuid.uuid4().hex[:6]}"
    report = drv.verify(m, tmp_path / m.id, my_seeded, scratch_name=name)
    assert not report.ok
    assert report.mismatches == ["table orders: 5000 rows, manifest says 5001"]
    assert name not in my_schemas()


def test_verify_detects_a_row_deleted_in_the_scratch_copy(my_seeded: str, tmp_path: Path) -> None:
    drv = get_driver("mysql")
    m = drv.backup(my_seeded, tmp_path)
    name = f"tminus_t_scratch_{uuid.uuid4().hex[:6]}"
    try:
        report = drv.verify(m, tmp_path / m.id, my_seeded, scratch_name=name, keep_scratch=True)
        assert report.ok and report.scratch_kept and name in my_schemas()
        my_exec(name, "DELETE FROM audit WHERE id = 500")
        assert drv.compare(m, my_url_for(name)) == ["table audit: 999 rows, manifest says 1000"]
        my_exec(name, "UPDATE orders SET note = 'x' WHERE id = 7")
        problems = drv.compare(m, my_url_for(name))
        assert any(p.startswith("table orders: checksum") for p in problems)
        my_exec(name, "CREATE INDEX extra_idx ON users (name)")
        problems = drv.compare(m, my_url_for(name))
        assert "index extra_idx on users is not in the manifest" in problems
    finally:
        my_exec(None, f"DROP DATABASE IF EXISTS `{name}`")


def test_manifest_matches_the_dump_under_concurrent_writes(my_seeded: str, tmp_path: Path) -> None:
    """The FLUSH TABLES WITH READ LOCK handshake makes our snapshot and the dump's equal:
    verify passes although rows are inserted and updated throughout the backup."""
    stop = threading.Event()
    done = 0
    db = _name(my_seeded)

    def writer() -> None:
        nonlocal done
        conn = my_admin()
        try:
            with conn.cursor() as cur:
                while not stop.is_set():
                    cur.execute(f"INSERT INTO `{db}`.audit (payload, at) VALUES ('{{}}', NOW())")
                    cur.execute(f"UPDATE `{db}`.users SET score = score + 1 WHERE id = 5")
                    done += 1
        finally:
            conn.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        drv = get_driver("mysql")
        m = drv.backup(my_seeded, tmp_path)
    finally:
        stop.set()
        t.join()
    assert done > 0
    report = drv.verify(m, tmp_path / m.id, my_seeded)
    assert report.ok, report.summary()


def test_no_password_in_manifest_argv_or_errors(
    my_seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dedicated user with a password: backup, restore and verify with it; the password is in
    no manifest, no command line and no error message."""
    secret = "s3cr3t-" + uuid.uuid4().hex[:8]
    user = "tminus_t_" + uuid.uuid4().hex[:6]
    db = _name(my_seeded)
    my_exec(
        None,
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'",
        f"GRANT ALL ON *.* TO '{user}'@'%'",
    )
    try:
        url = my_seeded.replace("root@", f"{user}:{secret}@")
        path, log = wrap_tools(tmp_path, ["mariadb-dump", "mariadb"])
        monkeypatch.setenv("PATH", path)
        drv = get_driver("mariadb")
        m = drv.backup(url, tmp_path / "out")
        text = (tmp_path / "out" / m.id / "manifest.json").read_text()
        assert secret not in text
        assert json.loads(text)["target"] == f"mysql://{user}@127.0.0.1:3306/{db}"
        drv.restore(m, tmp_path / "out" / m.id, url)
        assert drv.verify(m, tmp_path / "out" / m.id, url).ok
        argv = log.read_text()
        assert "mariadb-dump" in argv and "mariadb " in argv and secret not in argv
        with pytest.raises(BackupError) as exc:
            drv.backup(url.replace(secret, secret + "-wrong"), tmp_path / "out")
        assert "Access denied" in str(exc.value) and secret not in str(exc.value)
    finally:
        my_exec(None, f"DROP USER IF EXISTS '{user}'@'%'")


def test_url_parsing() -> None:
    u = MysqlUrl.parse("mariadb://app:p%40ss@db.example:3307/shop")
    assert (u.user, u.password, u.host, u.port, u.database) == (
        "app",
        "p@ss",
        "db.example",
        3307,
        "shop",
    )


def test_empty_schema_is_refused(my_db: str, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no tables"):
        get_driver("mysql").backup(my_db, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_check_tools_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, my_seeded: str
) -> None:
    assert check_tools("mariadb") == []
    msgs = check_tools("mysql", path=str(tmp_path))
    assert msgs == [
        "mariadb-dump or mysqldump not found on PATH: install the Debian package "
        "mariadb-client (apt-get install mariadb-client)",
        "mariadb or mysql not found on PATH: install the Debian package mariadb-client "
        "(apt-get install mariadb-client)",
    ]
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match="mariadb-client"):
        get_driver("mariadb").backup(my_seeded, tmp_path / "out")


def test_snapshot_and_estimate(my_seeded: str) -> None:
    drv = get_driver("mysql")
    snap = drv.snapshot(my_seeded)
    assert snap["tables"] == {"audit": 1000, "orders": 5000, "users": 2000}
    assert "orders.orders_user_idx" in snap["indexes"]
    assert drv.estimate_size(my_seeded) > 100_000


def test_sqlrun_speaks_mysql(my_seeded: str) -> None:
    from tminus.sqlrun import engine_url, run_query

    assert engine_url("mariadb", "mariadb://u:p@h/db") == "mysql+pymysql://u:p@h/db"
    assert engine_url("mysql", "mysql://u@h:3306/db") == "mysql+pymysql://u@h:3306/db"
    assert engine_url("mysql", "mysql+pymysql://u@h/db") == "mysql+pymysql://u@h/db"
    assert engine_url("postgres", "postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert engine_url("sqlite", "sqlite:///x.db") == "sqlite:///x.db"
    assert run_query("mariadb", my_seeded, "SELECT COUNT(*) FROM users") == [(2000,)]
