"""SQLite driver: online backup API, restore onto the live file, verify in a temporary file."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.backups.conftest import flip_byte, truncate
from tminus.backups import BackupError, Manifest, check_tools, get_driver
from tminus.backups.base import TableEntry

SEED = """
PRAGMA journal_mode = WAL;
CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE,
                    name TEXT, score REAL, avatar BLOB);
CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT,
                     user_id INTEGER NOT NULL REFERENCES users (id),
                     amount REAL NOT NULL CHECK (amount >= 0), note TEXT);
CREATE INDEX orders_user_idx ON orders (user_id);
CREATE TABLE audit (id INTEGER PRIMARY KEY, payload TEXT);
"""


def content(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(path)) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {n: conn.execute(f"SELECT * FROM {n} ORDER BY id").fetchall() for n in names}


def execute(path: Path, *statements: str) -> None:
    with closing(sqlite3.connect(path)) as conn:
        for s in statements:
            conn.execute(s)
        conn.commit()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(SEED)
        conn.executemany(
            "INSERT INTO users (email, name, score, avatar) VALUES (?, ?, ?, ?)",
            [
                (f"u{g}@x", None if g % 7 == 0 else f"User {g}", g * 1.25, bytes([g % 256]) * 4)
                for g in range(1, 2001)
            ],
        )
        conn.executemany(
            "INSERT INTO orders (user_id, amount, note) VALUES (?, ?, ?)",
            [(1 + g % 2000, (g % 500) / 2, None if g % 3 == 0 else f"n{g}") for g in range(5000)],
        )
        conn.executemany(
            "INSERT INTO audit (payload) VALUES (?)", [(f"p{g}",) for g in range(1000)]
        )
        conn.commit()
    return path


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_backup_uses_the_backup_api_and_counts_from_the_copy(db: Path, tmp_path: Path) -> None:
    m = get_driver("sqlite").backup(url(db), tmp_path / "b")
    assert Manifest.load(tmp_path / "b" / m.id) == m
    assert m.id.endswith("-app")
    assert {t.name: t.rows for t in m.tables} == {"audit": 1000, "orders": 5000, "users": 2000}
    assert "orders_user_idx" in {i.name for i in m.indexes}
    assert {s.name: s.last_value for s in m.sequences} == {
        "orders.autoincrement": 5000,
        "users.autoincrement": 2000,
    }
    assert check_tools("sqlite") == []
    # the copy is a database of its own, not a file copy of a WAL database
    with closing(sqlite3.connect(tmp_path / "b" / m.id / "database.sqlite3")) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (5000,)


def test_restore_after_breaking_the_data(db: Path, tmp_path: Path) -> None:
    drv = get_driver("sqlite")
    before = content(db)
    m = drv.backup(url(db), tmp_path / "b")
    execute(
        db,
        "DELETE FROM orders WHERE id % 10 = 0",
        "UPDATE users SET name = 'broken' WHERE id < 100",
        "DROP TABLE audit",
        "CREATE TABLE added_later (id INTEGER)",
    )
    drv.restore(m, tmp_path / "b" / m.id, url(db))
    assert content(db) == before
    assert drv.compare(m, url(db)) == []


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_backup_is_refused_and_target_untouched(
    db: Path, tmp_path: Path, damage: str
) -> None:
    drv = get_driver("sqlite")
    m = drv.backup(url(db), tmp_path / "b")
    execute(db, "DELETE FROM orders WHERE id > 4000", "DROP TABLE audit")
    broken = content(db)
    data = tmp_path / "b" / m.id / "database.sqlite3"
    size = data.stat().st_size
    (flip_byte if damage == "flip" else truncate)(data)
    with pytest.raises(BackupError) as exc:
        drv.restore(m, tmp_path / "b" / m.id, url(db))
    msg = str(exc.value)
    assert "database.sqlite3" in msg and "refusing" in msg
    if damage == "flip":
        assert "corrupted: sha256 expected" in msg
    else:
        assert f"truncated: expected {size} bytes, found {size // 2}" in msg
    assert content(db) == broken


def test_verify_and_scratch(db: Path, tmp_path: Path) -> None:
    drv = get_driver("sqlite")
    m = drv.backup(url(db), tmp_path / "b")
    report = drv.verify(m, tmp_path / "b" / m.id, url(db))
    assert report.ok and report.checked_rows == 8000
    assert report.scratch and not Path(report.scratch).exists()

    kept = drv.verify(m, tmp_path / "b" / m.id, url(db), keep_scratch=True)
    assert kept.ok and kept.scratch
    scratch = Path(kept.scratch)
    try:
        execute(scratch, "DELETE FROM audit WHERE id = 5")
        assert drv.compare(m, str(scratch)) == ["table audit: 999 rows, manifest says 1000"]
    finally:
        scratch.unlink()

    m.tables = [TableEntry(t.name, t.rows, "0" * 32) if t.name == "users" else t for t in m.tables]
    bad = drv.verify(m, tmp_path / "b" / m.id, url(db))
    assert not bad.ok and bad.mismatches[0].startswith("table users: checksum")
    assert bad.scratch and not Path(bad.scratch).exists()


def test_backup_while_writing(db: Path, tmp_path: Path) -> None:
    stop = threading.Event()

    def writer() -> None:
        with closing(sqlite3.connect(db, timeout=10)) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO audit (payload) VALUES ('w')")
                conn.commit()

    t = threading.Thread(target=writer)
    t.start()
    try:
        drv = get_driver("sqlite")
        m = drv.backup(url(db), tmp_path / "b")
    finally:
        stop.set()
        t.join()
    assert drv.verify(m, tmp_path / "b" / m.id, url(db)).ok


def test_empty_database_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(BackupError, match="no tables"):
        get_driver("sqlite").backup(url(empty), tmp_path / "b")
    assert not (tmp_path / "b").exists() or list((tmp_path / "b").iterdir()) == []


def test_snapshot(db: Path) -> None:
    snap = get_driver("sqlite").snapshot(url(db))
    assert snap["tables"] == {"audit": 1000, "orders": 5000, "users": 2000}
    assert get_driver("sqlite").estimate_size(url(db)) > 0


def test_manifest_fail_closed_rules(db: Path, tmp_path: Path) -> None:
    drv = get_driver("sqlite")
    m = drv.backup(url(db), tmp_path / "b")
    bdir = tmp_path / "b" / m.id
    assert Manifest.from_json(m.to_json()) == m
    with pytest.raises(BackupError, match="not valid JSON"):
        Manifest.from_json("{")
    with pytest.raises(BackupError, match="malformed"):
        Manifest.from_json('{"format": 1, "id": "x"}')
    empty = Manifest.from_json(m.to_json())
    empty.tables = []
    with pytest.raises(BackupError, match="0 tables"):
        drv.restore(empty, bdir, url(db))
    assert not drv.verify(empty, bdir, url(db)).ok
    with pytest.raises(BackupError, match="kind 'sqlite', not 'postgres'"):
        get_driver("postgres").restore(m, bdir, "postgresql://nobody@127.0.0.1:1/x")
    (bdir / "stray.sql").write_text("extra")
    with pytest.raises(BackupError, match=r"stray.sql: not listed in the manifest"):
        drv.restore(m, bdir, url(db))
