"""The PostgreSQL restore checksums each table as soon as its data is in, while pg_restore goes
on with the rest (tminus/backups/_postgres_restore.py), and still fails closed: a restore whose
data differs from the manifest fails, whichever path computed the checksum."""

from __future__ import annotations

import dataclasses
import gzip
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.backups.conftest import pg_content, pg_exec
from tminus.backups import BackupError, Manifest, get_driver
from tminus.backups import _postgres_restore as restore_mod
from tminus.backups._pg_progress import plain_env, read_line
from tminus.backups._postgres_restore import data_items
from tminus.backups.base import sha256_file


def _spy_checksums(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record (table, thread name) of every checksum the early path computes (calls through)."""
    seen: list[tuple[str, str]] = []
    real = restore_mod._table_entry

    def spy(conn: Any, algorithm: str, rel: Any) -> Any:
        seen.append((f"{rel[0]}.{rel[1]}", threading.current_thread().name))
        return real(conn, algorithm, rel)

    monkeypatch.setattr(restore_mod, "_table_entry", spy)
    return seen


def _reseal(bdir: Path, m: Manifest, changed: Path) -> None:
    """Record a changed dump file's size and sha256 in the manifest, so the file check passes
    and only the restored data can tell (what a pg_dump/pg_restore bug would look like)."""
    rel = changed.relative_to(bdir).as_posix()
    m.files = [
        dataclasses.replace(f, size=changed.stat().st_size, sha256=sha256_file(changed))
        if f.path == rel
        else f
        for f in m.files
    ]
    (bdir / "manifest.json").write_text(m.to_json())


def _data_file(bdir: Path, table: str) -> Path:
    toc = subprocess.run(
        ["pg_restore", "--list", str(bdir / "dump")], capture_output=True, text=True, check=True
    ).stdout
    (dump_id,) = [i for i, t in data_items(toc, [table]).items() if t == table]
    return bdir / "dump" / f"{dump_id}.dat.gz"


def test_every_table_is_checksummed_while_restoring_and_the_restore_is_exact(
    pg_seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drv = get_driver("postgres")
    before = pg_content(pg_seeded)
    m = drv.backup(pg_seeded, tmp_path, jobs=2)
    pg_exec(pg_seeded, "DELETE FROM orders WHERE id % 10 = 0", "DROP TABLE audit")
    seen = _spy_checksums(monkeypatch)
    drv.restore(m, tmp_path / m.id, pg_seeded, jobs=2)
    assert pg_content(pg_seeded) == before
    # each manifest table once, on the early path's sessions (not after pg_restore ended)
    assert sorted(t for t, _ in seen) == sorted(t.name for t in m.tables)
    assert all(name.startswith("tminus-ck") for _, name in seen), seen


def test_announcements_are_read_when_the_leaders_and_a_workers_lines_interleave() -> None:
    """PostgreSQL's logging (``src/common/logging.c``) writes ``"pg_restore:"``, ``" "`` and
    ``"<message>\\n"`` apart, so with ``-j`` the leader's ``finished item`` can follow a
    worker's prefix, or its halves: the cause of two CI runs that checksummed a table after
    pg_restore (sessions 14 and 15). Reproduced in session 15: 40 restores of a 12-table dump
    with ``-j 4`` showed ``pg_restore:pg_restore: finished item …`` and `` finished item 3437
    TABLE DATA t4`` (the blank alone, its prefix on the line before); session 14's reader
    missed 10 announcements in 9 of the 40 runs, this one none. Mutations tried: the first
    reader (``^pg_restore: finished item`` on the raw line) and session 14's (a run of
    ``"pg_restore: "``): the forms below with the colon and the blank apart were not read, and
    this test failed with each."""
    assert read_line("pg_restore: finished item 3350 TABLE DATA orders") == (3350, True)
    # the worker's prefix, then the leader's whole line; then the worker's bare message
    assert read_line("pg_restore: pg_restore: finished item 12 TABLE DATA a b") == (12, True)
    # the two prefixes' halves interleaved: "pg_restore:" "pg_restore:" " " " " message
    assert read_line("pg_restore:pg_restore:  finished item 13 TABLE DATA a b") == (13, True)
    assert read_line("pg_restore:pg_restore: pg_restore:  finished item 14 TABLE DATA c") == (
        14,
        True,
    )
    assert read_line("pg_dump:pg_dump:  finished item 15 TABLE DATA c") == (15, True)
    assert read_line(" finished item 3437 TABLE DATA t4") == (3437, True)  # seen here
    assert read_line("finished item 7 TABLE DATA orders") == (7, True)
    assert read_line('processing data for table "public.c"') == (None, True)
    assert read_line("pg_restore: finished item 3205 CONSTRAINT a a_pkey") == (None, True)
    assert read_line("pg_restore: error: could not execute query") == (None, False)
    assert read_line("DETAIL: finished item 9 TABLE DATA x") == (None, False)


def test_pg_restore_speaks_plain_english_whatever_the_callers_locale_and_colours(
    pg_seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's ``PG_COLOR=always`` (escapes around the prefix) or a translated locale would
    hide every announcement: the restore would stay exact but checksum after pg_restore.
    Mutation tried: ``env=env`` instead of ``plain_env(env)`` for pg_restore — no table was
    then checksummed on the early path and this test failed."""
    env = plain_env({"LC_ALL": "de_DE.UTF-8", "LANGUAGE": "de", "PG_COLOR": "always", "X": "1"})
    assert env["LC_MESSAGES"] == "C" and env["PG_COLOR"] == "never" and env["X"] == "1"
    assert "LC_ALL" not in env and "LANGUAGE" not in env and env["LC_CTYPE"] == "de_DE.UTF-8"
    monkeypatch.setenv("PG_COLOR", "always")
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path, jobs=2)
    seen = _spy_checksums(monkeypatch)
    drv.restore(m, tmp_path / m.id, pg_seeded, jobs=2)
    assert sorted(t for t, _ in seen) == sorted(t.name for t in m.tables)
    assert all(name.startswith("tminus-ck") for _, name in seen), seen


def test_a_restore_whose_data_differs_from_the_manifest_fails(
    pg_seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Safety test. Mutation tried: ``_restore_checked`` dropping the problems of the tables the
    early path checksummed (``problems = [p for p in problems if not any(p.startswith(f"table
    {s}.{n}:") for s, n in known)]``) — the restore then succeeded with a changed row and this
    test failed."""
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path, jobs=2)
    bdir = tmp_path / m.id
    data = _data_file(bdir, "public.orders")
    text = gzip.decompress(data.read_bytes()).decode()
    assert "\tnote 7\n" in text
    data.write_bytes(gzip.compress(text.replace("\tnote 7\n", "\tnote 8\n", 1).encode()))
    _reseal(bdir, m, data)
    seen = _spy_checksums(monkeypatch)
    with pytest.raises(BackupError) as exc:
        drv.restore(Manifest.load(bdir), bdir, pg_seeded, jobs=2)
    assert "table public.orders: checksum" in str(exc.value), exc.value
    assert "public.orders" in {t for t, _ in seen}, seen  # found by the early path
    # verify (a scratch restore) takes the same path and reports the same
    report = drv.verify(Manifest.load(bdir), bdir, pg_seeded)
    assert not report.ok
    assert any(p.startswith("table public.orders: checksum") for p in report.mismatches)


def test_a_row_lost_in_the_dump_fails_the_restore_with_one_job(
    pg_seeded: str, tmp_path: Path
) -> None:
    """With ``jobs=1`` pg_restore runs serially and announces no finished table: every table is
    checksummed after it, and a lost row is still found."""
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path, jobs=1)
    bdir = tmp_path / m.id
    data = _data_file(bdir, "public.audit")
    lines = gzip.decompress(data.read_bytes()).decode().split("\n")
    data.write_bytes(gzip.compress("\n".join(lines[:10] + lines[11:]).encode()))
    _reseal(bdir, m, data)
    with pytest.raises(BackupError, match=r"table public\.audit: 999 rows, manifest says 1000"):
        drv.restore(Manifest.load(bdir), bdir, pg_seeded, jobs=1)


def test_data_items_match_one_table_each() -> None:
    toc = "\n".join(
        [
            ";",
            "3354; 0 17053 TABLE DATA public a postgres",
            "3355; 0 17061 TABLE DATA s2 we ird postgres",
            "3356; 0 17062 TABLE DATA x y z owner",  # x.y or x.'y z'? ambiguous: left out
            "3208; 2606 17059 CONSTRAINT public a a_pkey postgres",
        ]
    )
    items = data_items(toc, ["public.a", "s2.we ird", "x.y", "x.y z", "public.b"])
    assert items == {3354: "public.a", 3355: "s2.we ird"}
