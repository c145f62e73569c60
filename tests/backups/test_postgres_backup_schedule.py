"""The PostgreSQL backup's checksums take the place of pg_dump's idle workers
(tminus/backups/postgres.py, tminus/backups/_pg_progress.py): checksum session ``k`` starts
when all but ``jobs - k - 1`` tables are dumped (``pg_dump -v``'s ``finished item … TABLE
DATA``) or pg_dump has ended, each session one backend without parallel workers, so the
server never has more than ``jobs`` of the backup's sessions busy; a pg_dump that fails is
reported as such, without the checksums running first."""

from __future__ import annotations

import contextvars
import dataclasses
import os
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.backups.conftest import pg_admin, pg_exec
from tminus.backups import BackupError, get_driver
from tminus.backups import _postgres_state as state_mod
from tminus.backups import postgres as pg_mod
from tminus.backups._pg_progress import Announcements
from tminus.backups.base import sha256_file
from tminus.backups.tools import in_background


def test_announcements_count_table_data_and_keep_the_rest_for_an_error() -> None:
    """Read from a real pipe while the writer is still writing: ``wait_finished`` returns once
    enough ``TABLE DATA`` items are announced (also interleaved ones), and when the stream ends
    however few were; progress lines of either tool are dropped, errors kept. Mutation tried:
    ``wait_finished`` returning at once — the third wait did not block and this test failed."""
    r, w = os.pipe()
    with os.fdopen(r, "rb") as stream, os.fdopen(w, "wb", buffering=0) as out:
        said = Announcements(stream)
        out.write(
            b"pg_dump: reading extensions\n"
            b"pg_dump: last built-in OID is 16383\n"
            b"pg_dump: pg_dump: finished item 3362 TABLE DATA accounts\n"
            b'dumping contents of table "public.x"\n'
            b"pg_dump: finished item 3374 SEQUENCE SET accounts_id_seq\n"
            b"pg_dump: finished item 3364 TABLE DATA events\n"
        )
        said.wait_finished(2)
        assert said.finished == 2 and not said.ended
        blocked = threading.Thread(target=said.wait_finished, args=(3,))
        blocked.start()
        blocked.join(0.3)
        assert blocked.is_alive()  # a third table is not announced yet
        out.write(b"pg_dump: error: query failed: ERROR:  boom\npg_dump: detail: Query was: x\n")
        out.close()
        blocked.join(5)
        assert not blocked.is_alive() and said.ended
        assert said.join().splitlines() == [
            "pg_dump: error: query failed: ERROR:  boom",
            "pg_dump: detail: Query was: x",
        ]


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record, as each backup checksum starts: its thread, how many tables pg_dump had announced
    dumped, whether pg_dump's stream had ended, and the session's parallel-worker setting."""
    seen: list[dict[str, Any]] = []
    said: list[Announcements] = []

    class Recorded(Announcements):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            said.append(self)

    real = state_mod._table_entry

    def spy(conn: psycopg.Connection[Any], algorithm: str, rel: Any) -> Any:
        row = conn.execute("SHOW max_parallel_workers_per_gather").fetchone()
        seen.append(
            {
                "table": f"{rel[0]}.{rel[1]}",
                "thread": threading.current_thread().name,
                "finished": said[-1].finished,
                "ended": said[-1].ended,
                "workers": row[0] if row else None,
            }
        )
        return real(conn, algorithm, rel)

    monkeypatch.setattr(pg_mod, "Announcements", Recorded)
    monkeypatch.setattr(state_mod, "_table_entry", spy)
    return seen


def test_backup_checksums_wait_for_an_idle_pg_dump_worker_one_backend_each(
    pg_seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three tables, ``jobs=2``: the first session starts once two tables are dumped, the second
    once all three are (or pg_dump ended), each without parallel workers; the backup is still
    exact (a restore from it verifies). Mutations tried: the backup's ``gate`` left out of its
    ``_state`` call (the checksums started with 0 tables dumped) and ``single=False``
    (sessions showed 2 parallel workers): each made this test fail."""
    seen = _spy(monkeypatch)
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path, jobs=2)
    assert sorted(s["table"] for s in seen) == sorted(t.name for t in m.tables)
    tables = len(m.tables)
    firsts: dict[str, dict[str, Any]] = {}
    for s in seen:
        firsts.setdefault(s["thread"], s)
        assert s["workers"] == "0", s
        assert s["ended"] or s["finished"] >= tables - 1, s
    for thread, s in firsts.items():
        if thread.startswith("tminus-checksum"):  # the second session
            assert s["ended"] or s["finished"] >= tables, s
    monkeypatch.undo()
    assert drv.verify(m, tmp_path / m.id, pg_seeded).ok


def test_a_serial_backup_checksums_after_pg_dump(
    pg_seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``jobs=1``: pg_dump's serial mode announces nothing, and one busy session is the budget,
    so the checksums follow the dump (its stream has ended) and the manifest is complete."""
    seen = _spy(monkeypatch)
    m = get_driver("postgres").backup(pg_seeded, tmp_path, jobs=1)
    assert sorted(s["table"] for s in seen) == sorted(t.name for t in m.tables)
    assert all(s["ended"] and s["workers"] == "0" for s in seen), seen


def test_a_failed_pg_dump_is_reported_without_waiting_for_the_checksums(
    pg_seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role that may read the catalog but not one table: pg_dump fails on it, and the error
    is pg_dump's own, with no checksum run (the checksum session would have failed on the same
    table with a different message). Mutation tried: the backup's ``gate`` left out — the
    error was then the checksum query's ``permission denied`` and this test failed."""
    role = f"tminus_t_dump_{uuid.uuid4().hex[:8]}"
    pg_exec(pg_seeded, f'CREATE ROLE "{role}" LOGIN')
    try:
        pg_exec(
            pg_seeded,
            f'GRANT SELECT ON users, orders TO "{role}"',
            f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
        )
        url = pg_seeded.replace("://postgres@", f"://{role}@", 1)
        assert url != pg_seeded
        seen = _spy(monkeypatch)
        with pytest.raises(BackupError) as err:
            get_driver("postgres").backup(url, tmp_path, jobs=2)
        assert str(err.value).startswith("pg_dump failed (exit 1)"), err.value
        assert "permission denied" in str(err.value) and "audit" in str(err.value)
        assert seen == []
        assert list(tmp_path.iterdir()) == []  # the half-written backup is gone
    finally:
        with pg_admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
        pg_exec(pg_seeded, f'DROP OWNED BY "{role}"')
        with pg_admin() as conn:
            conn.execute(f'DROP ROLE "{role}"')


def test_a_table_missing_from_the_dumps_listing_abandons_the_backup(
    pg_seeded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pg_restore --list`` now runs while the files are hashed; its check still comes before
    the manifest is written. Stand-in: the real listing with ``public.audit``'s ``TABLE DATA``
    line taken out (what a pg_dump that lost a table would leave). Mutation tried: ``commit``
    without its ``check`` — the backup was then written and this test failed."""
    real = pg_mod.PostgresDriver._listing

    def listing(self: Any, dump: Path) -> Any:
        proc = real(self, dump).result()
        kept = [ln for ln in proc.stdout.splitlines() if "TABLE DATA public audit" not in ln]
        return in_background(lambda: subprocess.CompletedProcess([], 0, "\n".join(kept), ""))

    monkeypatch.setattr(pg_mod.PostgresDriver, "_listing", listing)
    with pytest.raises(BackupError, match=r"the dump has no data for tables: public\.audit"):
        get_driver("postgres").backup(pg_seeded, tmp_path, jobs=2)
    assert list(tmp_path.iterdir()) == []


def test_in_background_keeps_the_context_and_hands_back_errors() -> None:
    """A tool run in the background joins the caller's cancel scope (a context variable) and
    its error reaches whoever asks for the result. Mutation tried: ``fn`` called outside the
    copied context — the variable read "unset" and this test failed."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller's")
    assert in_background(var.get).result(timeout=5) == "caller's"

    def boom() -> None:
        raise BackupError("pg_restore --list failed")

    with pytest.raises(BackupError, match="--list failed"):
        in_background(boom).result(timeout=5)


def test_a_listing_pg_restore_cannot_read_is_refused_before_the_target_is_touched(
    pg_seeded: str, tmp_path: Path
) -> None:
    """``pg_restore --list`` runs while the files are hashed, and its result is taken before
    the target's schemas are dropped. A ``toc.dat`` that pg_restore cannot read, resealed in
    the manifest (what a pg_dump bug would leave: the file check passes), fails the restore
    and leaves the target as it was. Mutation tried: the listing's result taken after the
    drop (where the restore reads it) — the target was then emptied and this test failed."""
    drv = get_driver("postgres")
    m = drv.backup(pg_seeded, tmp_path, jobs=2)
    bdir = tmp_path / m.id
    toc = bdir / "dump" / "toc.dat"
    toc.write_bytes(b"not a table of contents\n")
    m.files = [
        dataclasses.replace(f, size=toc.stat().st_size, sha256=sha256_file(toc))
        if f.path == "dump/toc.dat"
        else f
        for f in m.files
    ]
    pg_exec(pg_seeded, "CREATE TABLE kept (id int)", "INSERT INTO kept VALUES (1)")
    with pytest.raises(BackupError, match="pg_restore --list failed"):
        drv.restore(m, bdir, pg_seeded, jobs=2)
    with psycopg.connect(pg_seeded, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM kept").fetchone()
    assert row is not None and row[0] == 1
