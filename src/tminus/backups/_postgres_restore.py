"""A PostgreSQL restore whose table checksums run while the restore goes on.

``pg_restore -v -j N`` announces ``finished item <id> TABLE DATA <name>`` as each table's data
is committed; the ``<id>`` is looked up in ``pg_restore --list`` (the dump's table of contents)
and matched with the manifest's ``schema.table``. That table's exact row count and checksum are
then computed on one of ``jobs`` sessions while pg_restore loads the other tables and builds
indexes and constraints (post-data changes no row: indexes, constraints, triggers and grants
only). Nothing is verified less: a table the restore did not announce (a name the listing makes
ambiguous, ``-j 1``, whose serial mode announces nothing) is checksummed after pg_restore ends
with the rest of the comparison, and every table of the target is compared with the manifest
either way. The announcements are read as :mod:`._pg_progress` reads them. A
checksum session waiting on pg_restore's lock (``ADD PRIMARY KEY``), or pg_restore
waiting on a checksum's scan, only serialises the two.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import subprocess
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

from tminus import work
from tminus.backups._pg_progress import plain_env, read_line
from tminus.backups._postgres_db import _connect, _libpq_url
from tminus.backups._postgres_state import _Rel, _table_entry
from tminus.backups.base import BackupError, TableEntry
from tminus.backups.tools import kill_tool, mask, tail

__all__: list[str] = []


def data_items(toc: str, tables: list[str]) -> dict[int, str]:
    """``dumpId -> schema.table`` of the TABLE DATA entries of ``pg_restore --list`` that match
    exactly one manifest table (a line reads ``<id>; 0 <oid> TABLE DATA <schema> <name>
    <owner>``; a listing that two tables could match is left out, and checksummed after)."""
    out: dict[int, str] = {}
    for line in toc.splitlines():
        m = re.match(r"^(\d+); \d+ \d+ TABLE DATA (.*)$", line)
        if m is None:
            continue
        rest = m.group(2) + " "
        hits = [t for t in tables if rest.startswith(t.replace(".", " ", 1) + " ")]
        if len(hits) == 1:
            out[int(m.group(1))] = hits[0]
    return out


def _rel(conn: psycopg.Connection[Any], name: str) -> _Rel | None:
    """The table ``schema.table`` of the manifest with its columns, or None when no (or more
    than one) table of the target has that name."""
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname, a.attname, a.atttypid::int, a.attnotnull FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relkind = 'r' AND n.nspname || '.' || c.relname = %s
        ORDER BY c.oid, a.attnum
        """,
        (name,),
    ).fetchall()
    if not rows or len({(r[0], r[1]) for r in rows}) != 1:
        return None
    cols = tuple((str(r[2]), int(r[3]), bool(r[4])) for r in rows if r[2] is not None)
    return (str(rows[0][0]), str(rows[0][1]), cols)


class _Checksums:
    """Up to ``jobs`` sessions checksumming tables as their data lands (each session reused)."""

    def __init__(self, url: str, algorithm: str, jobs: int) -> None:
        self.url = url
        self.algorithm = algorithm
        self.pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="tminus-ck")
        self.futures: list[Future[tuple[tuple[str, str], TableEntry] | None]] = []
        self.local = threading.local()
        self.conns: list[psycopg.Connection[Any]] = []
        self.lock = threading.Lock()

    def submit(self, name: str) -> None:
        # each task in a copy of this context: its sessions join the cancel scope
        ctx = contextvars.copy_context()
        self.futures.append(self.pool.submit(ctx.run, self._one, name))

    def _one(self, name: str) -> tuple[tuple[str, str], TableEntry] | None:
        conn: psycopg.Connection[Any] | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = _connect(self.url)
            self.local.conn = conn
            with self.lock:
                self.conns.append(conn)
        rel = _rel(conn, name)
        if rel is None:
            return None
        return (rel[0], rel[1]), _table_entry(conn, self.algorithm, rel)

    def results(self) -> dict[tuple[str, str], TableEntry]:
        out: dict[tuple[str, str], TableEntry] = {}
        for f in self.futures:
            got = f.result()
            if got is not None:
                out[got[0]] = got[1]
        return out

    def close(self) -> None:
        for f in self.futures:
            f.cancel()
        if not all(f.done() for f in self.futures):  # a failure: stop the scans still running
            with self.lock:
                for c in self.conns:
                    with contextlib.suppress(Exception):
                        c.cancel()
        self.pool.shutdown(wait=True)
        for c in self.conns:
            with contextlib.suppress(Exception):
                c.close()


def restore_checksummed(
    pg_restore: str,
    dump: Path,
    toc: str,
    url: str,
    tables: list[str],
    algorithm: str,
    *,
    jobs: int,
    env: dict[str, str],
    secrets: list[str | None],
    what: str,
) -> dict[tuple[str, str], TableEntry]:
    """``pg_restore -j jobs --exit-on-error`` of ``dump`` (``toc``: its ``pg_restore --list``)
    into ``url``, checksumming each table of ``tables`` (the manifest's ``schema.table``
    names) as soon as its data is in; returns the entries computed (by ``(schema, table)``).
    A failed restore or checksum query is a :class:`BackupError`; the caller compares the
    entries (and the tables not announced)."""
    items = data_items(toc, tables)
    argv = [pg_restore, "-v", "--exit-on-error", "--no-password", "-j", str(max(1, jobs)),
            "-d", _libpq_url(url), str(dump)]  # fmt: skip
    try:
        proc = work.popen(
            argv,
            env=plain_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise BackupError(mask(f"{what} failed: {exc}", secrets)) from None
    checks = _Checksums(url, algorithm, jobs)
    messages: deque[str] = deque(maxlen=40)
    try:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            dump_id, progress = read_line(line)
            if dump_id is not None:
                name = items.get(dump_id)
                if name is not None:
                    checks.submit(name)
            elif not progress:
                messages.append(line)
        rc = proc.wait()
        if rc != 0:
            raise BackupError(
                mask(f"{what} failed (exit {rc}): {tail(chr(10).join(messages))}", secrets)
            )
        try:
            return checks.results()
        except psycopg.Error as exc:
            raise BackupError(mask(f"checksums of the restored tables: {exc}", secrets)) from None
    except BaseException:
        kill_tool(proc)
        raise
    finally:
        checks.close()
