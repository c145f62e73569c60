"""PostgreSQL driver against the real server: backup, break, restore; damaged backups refused;
verify in a scratch database; consistency under concurrent writes; no password anywhere."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import psycopg
import pytest

from tests.backups.conftest import (
    PG_TABLES,
    flip_byte,
    largest_file,
    pg_content,
    pg_databases,
    pg_drop,
    pg_exec,
    pg_url_for,
    truncate,
    wrap_tools,
)
from tminus.backups import BackupError, Manifest, check_tools, get_driver
from tminus.backups.postgres import PostgresDriver


def test_backup_writes_a_complete_manifest(pg_seeded: str, tmp_path: Path) -> None:
    m = get_driver("postgres").backup(pg_seeded, tmp_path, jobs=2)
    bdir = tmp_path / m.id
    assert re.fullmatch(r"\d{8}T\d{6}Z-tminus_t_[0-9a-f]{10}", m.id)
    assert (bdir / "manifest.json").is_file()
    assert not list(tmp_path.glob(".*.partial"))
    assert Manifest.load(bdir) == m
    rows = {t.name: t.rows for t in m.tables}
    assert rows == {"public.audit": 1000, "public.orders": 5000, "public.users": 2000}
    assert m.totals["rows"] == 8000 and m.totals["tables"] == 3
    assert {i.name for i in m.indexes} >= {"public.orders_user_idx", "public.users_email_key"}
    assert any("FOREIGN KEY (user_id) REFERENCES public.users(id)" in c.definition
               for c in m.constraints)  # fmt: skip
    seqs = {s.name: s for s in m.sequences}
    assert seqs["public.users_id_seq"].last_value == 2000
    assert seqs["public.orders_id_seq"].max_value == 5000
    assert m.tool_version.startswith("pg_dump (PostgreSQL)")
    assert m.server_version.startswith("15")
    assert all(f.path.startswith("dump/") and f.size > 0 for f in m.files)
    assert "dump/toc.dat" in {f.path for f in m.files}


def test_restore_after_breaking_the_data(pg_seeded: str, tmp_path: Path) -> None:
    drv = get_driver("postgres")
    before = pg_content(pg_seeded)
    m = drv.backup(pg_seeded, tmp_path, jobs=3)
    pg_exec(
        pg_seeded,
        "DELETE FROM orders WHERE id % 10 = 0",
        "UPDATE users SET name = 'broken', score = 0 WHERE id < 100",
        "DROP TABLE audit",
        "CREATE TABLE added_later (id int)",  # a migration's new table must not survive
    )
    assert pg_content(pg_seeded) != before
    drv.restore(m, tmp_path / m.id, pg_seeded, jobs=3)
    assert pg_content(pg_seeded) == before
    assert drv.compare(m, pg_seeded) == []
    # sequences came back: a new row gets a fresh id
    with psycopg.connect(pg_seeded, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO users (email, created_at) VALUES ('new@x', now()) RETURNING id"
        ).fetchone()
        assert row is not None and row[0] == 2001


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_backup_is_refused_and_target_untouched(
    pg_seeded: str, tmp_path: Path, damage: str
) -> None:
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path)
    pg_exec(pg_seeded, "DELETE FROM orders WHERE id > 4000", "DROP TABLE audit")
    broken = pg_content(pg_seeded)
    data = largest_file(tmp_path / m.id)
    rel = data.relative_to(tmp_path / m.id).as_posix()
    size = data.stat().st_size
    (flip_byte if damage == "flip" else truncate)(data)
    with pytest.raises(BackupError) as exc:
        drv.restore(m, tmp_path / m.id, pg_seeded)
    msg = str(exc.value)
    assert rel in msg and "refusing" in msg
    if damage == "flip":
        assert "corrupted: sha256 expected" in msg and "actual" in msg
    else:
        assert f"truncated: expected {size} bytes, found {size // 2}" in msg
    assert pg_content(pg_seeded) == broken  # untouched
    report = drv.verify(m, tmp_path / m.id, pg_seeded)
    assert not report.ok and rel in report.mismatches[0]


def test_verify_passes_and_drops_the_scratch_database(pg_seeded: str, tmp_path: Path) -> None:
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path)
    report = drv.verify(m, tmp_path / m.id, pg_seeded)
    assert report.ok, report.summary()
    assert report.checked_tables == 3 and report.checked_rows == 8000
    assert report.scratch and report.scratch.startswith("tminus_verify_")
    # Only this scratch database is checked: other test runs may create their own meanwhile.
    assert report.scratch not in pg_databases()


def test_verify_reports_a_wrong_row_count_and_still_drops_scratch(
    pg_seeded: str, tmp_path: Path
) -> None:
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path)
    # a manifest that claims one more row than the dump holds (what a lost row looks like)
    m.tables = [
        t if t.name != "public.orders" else type(t)(t.name, t.rows + 1, t.checksum)
        for t in m.tables
    ]
    report = drv.verify(m, tmp_path / m.id, pg_seeded, scratch_name="tminus_t_scratch_count")
    assert not report.ok
    assert report.mismatches == ["table public.orders: 5000 rows, manifest says 5001"]
    assert "tminus_t_scratch_count" not in pg_databases()


def test_verify_detects_a_row_deleted_in_the_scratch_copy(pg_seeded: str, tmp_path: Path) -> None:
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path)
    name = "tminus_t_scratch_kept"
    try:
        report = drv.verify(m, tmp_path / m.id, pg_seeded, scratch_name=name, keep_scratch=True)
        assert report.ok and report.scratch_kept and name in pg_databases()
        pg_exec(pg_url_for(name), "DELETE FROM audit WHERE id = 500")
        problems = drv.compare(m, pg_url_for(name))
        assert problems == ["table public.audit: 999 rows, manifest says 1000"]
        pg_exec(pg_url_for(name), "UPDATE orders SET note = 'x' WHERE id = 7")
        assert any(p.startswith("table public.orders: checksum") for p in drv.compare(
            m, pg_url_for(name)))  # fmt: skip
    finally:
        pg_drop(name)


def test_verify_checks_sequences(pg_seeded: str, tmp_path: Path) -> None:
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path)
    name = "tminus_t_scratch_seq"
    try:
        drv.verify(m, tmp_path / m.id, pg_seeded, scratch_name=name, keep_scratch=True)
        pg_exec(pg_url_for(name), "SELECT setval('users_id_seq', 10)")
        problems = drv.compare(m, pg_url_for(name))
        assert len(problems) == 1
        assert "sequence public.users_id_seq: last value 10 is below max(id) = 2000" in problems[0]
    finally:
        pg_drop(name)


def test_manifest_matches_the_dump_under_concurrent_writes(pg_seeded: str, tmp_path: Path) -> None:
    """Counts come from the dump's own snapshot: rows inserted during the dump are in
    neither, so verify passes although the table changes all the time."""
    stop = threading.Event()
    inserted = 0

    def writer() -> None:
        nonlocal inserted
        with psycopg.connect(pg_seeded, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO audit (payload, at) VALUES ('{}', now())")
                conn.execute("UPDATE users SET score = score + 1 WHERE id = 5")
                inserted += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        drv = get_driver("postgres")
        m = drv.backup(pg_seeded, tmp_path, jobs=2)
    finally:
        stop.set()
        t.join()
    assert inserted > 0
    report = drv.verify(m, tmp_path / m.id, pg_seeded)
    assert report.ok, report.summary()


def test_no_password_in_manifest_argv_or_errors(
    pg_seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-Pa55word"
    url = pg_seeded.replace("postgres@", f"postgres:{secret}@") + "?application_name=t"
    assert secret in url
    path, log = wrap_tools(tmp_path, ["pg_dump", "pg_restore"])
    monkeypatch.setenv("PATH", path)
    drv = get_driver("postgres")
    m = drv.backup(url, tmp_path / "out")
    text = (tmp_path / "out" / m.id / "manifest.json").read_text()
    assert secret not in text
    assert json.loads(text)["target"] == pg_seeded + "?application_name=t"
    drv.restore(m, tmp_path / "out" / m.id, url)
    assert drv.verify(m, tmp_path / "out" / m.id, url).ok
    argv = log.read_text()
    assert "pg_dump" in argv and "pg_restore" in argv and secret not in argv
    missing = pg_url_for("tminus_t_does_not_exist").replace("postgres@", f"postgres:{secret}@")
    with pytest.raises(BackupError) as exc:
        drv.backup(missing, tmp_path / "out")
    assert "does_not_exist" in str(exc.value) and secret not in str(exc.value)
    assert not list((tmp_path / "out").glob(".*"))  # no partial backup left


def test_empty_database_is_refused(pg_db: str, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no tables"):
        get_driver("postgres").backup(pg_db, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_check_tools_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_seeded: str
) -> None:
    assert check_tools("postgres") == []
    msgs = check_tools("postgres", path=str(tmp_path))
    assert len(msgs) == 2
    assert all("postgresql-client" in m for m in msgs)
    assert msgs[0].startswith("pg_dump not found")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BackupError, match="install the Debian package postgresql-client"):
        PostgresDriver().backup(pg_seeded, tmp_path / "out")


def test_snapshot_and_estimate(pg_seeded: str) -> None:
    drv = get_driver("postgres")
    snap = drv.snapshot(pg_seeded)
    assert snap["tables"] == {"public.audit": 1000, "public.orders": 5000, "public.users": 2000}
    assert "public.orders_user_idx" in snap["indexes"]
    assert snap["total_rows"] == 8000
    assert drv.estimate_size(pg_seeded) > 1_000_000
    assert set(PG_TABLES) == set(snap["tables"])


def test_checksum_covers_the_whole_row_even_with_a_column_named_t(
    pg_db: str, tmp_path: Path
) -> None:
    """A column called ``t`` must not shadow the row in the checksum (it once did)."""
    pg_exec(
        pg_db,
        "CREATE TABLE tricky (id integer PRIMARY KEY, t text, secret text)",
        "INSERT INTO tricky SELECT g, 'same', 'x' || g FROM generate_series(1, 50) g",
    )
    drv = get_driver("postgres")
    m = drv.backup(pg_db, tmp_path)
    assert drv.compare(m, pg_db) == []
    pg_exec(pg_db, "UPDATE tricky SET secret = secret || '!'")  # the column t is unchanged
    problems = drv.compare(m, pg_db)
    assert any("tricky" in p and "checksum" in p for p in problems), problems
