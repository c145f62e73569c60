"""A private PostgreSQL server (:class:`tminus.testing.pgreplica.PgPrimary`, in a temporary
directory, with longer bounds for initdb and the start: ``timeout_s``) that a test can crash
for real, with its WAL writer frozen first so that what a commit did not flush stays
unwritten until the crash (not left to timing: the WAL writer would write it within
``wal_writer_delay``, or at once when the WAL crosses a page).

:func:`freeze_wal_writer` stops the WAL writer (SIGSTOP): from then on only a flushed commit
writes the WAL. :func:`crash` kills it (SIGKILL: the postmaster treats a dead child as a crash
and ends every server process at once, what was not written is lost), stops the server
(``pg_ctl stop -m immediate``) and starts it again (crash recovery from the WAL on disk)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg

from tminus.testing.pgreplica import PgPrimary, _bin, _run

__all__ = ["crash", "crashable_pg", "freeze_wal_writer", "fresh_db"]


#: initdb and a start may take long on a loaded machine (PgPrimary allows 30 s by default).
SLOW_S = 300


@contextmanager
def crashable_pg() -> Iterator[PgPrimary]:
    with PgPrimary(timeout_s=SLOW_S) as pg:
        yield pg


def _wal_writer(pg: PgPrimary) -> int:
    with psycopg.connect(pg.url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'"
        ).fetchone()
    assert row is not None, "no WAL writer process"
    return int(row[0])


def freeze_wal_writer(pg: PgPrimary) -> int:
    pid = _wal_writer(pg)
    os.kill(pid, signal.SIGSTOP)
    return pid


def crash(pg: PgPrimary, frozen: int) -> None:
    """Crash the server whose WAL writer ``frozen`` is stopped, and start it again."""
    assert pg.data is not None
    os.kill(frozen, signal.SIGKILL)
    time.sleep(0.5)  # the postmaster ends the other server processes (quickdie)
    with suppress(Exception):
        _run([_bin("pg_ctl"), "-D", str(pg.data), "-m", "immediate", "-w", "stop"], "stop", SLOW_S)
    pg.started = False
    pg._start()


def fresh_db(pg: PgPrimary, name: str) -> str:
    with psycopg.connect(pg.url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return pg.url.rsplit("/", 1)[0] + f"/{name}"
