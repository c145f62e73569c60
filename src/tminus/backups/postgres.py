"""PostgreSQL backups: ``pg_dump -Fd -j N --snapshot`` with the manifest computed in the very
snapshot the dump reads.

Backup
  1. A connection opens a ``REPEATABLE READ, READ ONLY`` transaction and runs
     ``SELECT pg_export_snapshot()``; the transaction stays open until the dump ends.
  2. ``pg_dump -Fd -j N --snapshot=<id>`` writes ``dump/`` (directory format, one compressed
     file per table) from that snapshot, while the same transaction computes, server-side, for
     every user table the exact row count and an order-independent checksum, plus indexes
     (``pg_get_indexdef``), constraints (``pg_get_constraintdef``) and sequences owned by
     serial/identity columns with ``max(column)``. Counts and checksums run on N sessions:
     N - 1 more import the snapshot (``SET TRANSACTION SNAPSHOT``) and take tables from the
     same queue. Counts and dump therefore describe the same instant.
  3. ``pg_restore --list`` must read the dump's table of contents and find ``TABLE DATA`` for
     every table of the manifest. The manifest records ``pg_dump --version``,
     ``SHOW server_version`` and the checksum algorithm (``details.checksum``).

Checksum of a table (see :func:`_checksum_query`): every row hashed, the hashes summed exactly
over all rows, the checksum the md5 of the sum(s). Format 2 manifests use ``row64`` (PostgreSQL
>= 14: ``hash_record_extended`` over the row's values, exact types as they are and the rest as
text, mixed again through ``hashtextextended``; one sum), format 1 manifests ``md5`` (both
64-bit halves of ``md5((t.*)::text)``, two sums); a manifest is verified with its own algorithm.
This is order-independent and counts duplicates like ``md5(string_agg(md5(t::text), '' ORDER
BY …))``, but needs constant memory: ``string_agg`` stops at 1 GB of text (~33 M rows). Text
output is pinned (UTC, ISO dates, ``extra_float_digits=3``, hex bytea, ``search_path=pg_catalog``)
so that two sessions print values identically.

Restore (decision: in place, into the target database itself)
  Files are checked first (size and sha256 of every file); a damaged backup is refused before
  anything is touched. Then, in one transaction with ``lock_timeout`` 30 s, every non-system
  schema of the target is dropped (``DROP SCHEMA … CASCADE``) and an empty ``public`` is
  recreated with the server's defaults, so objects created after the backup (a new table of a
  migration) do not survive. ``pg_restore -j N --exit-on-error`` then restores the dump and the
  target is compared with the manifest (tables, row counts, checksums, indexes, constraints,
  sequences, checksummed on N sessions sharing a snapshot); any difference is a
  :class:`BackupError`. The target keeps its name, owner,
  grants and connection settings, which a restore into a new database and a rename would lose.
  A failure during ``pg_restore`` (disk full) leaves the target partly restored: the error
  says so, and restoring again is safe.

Verify
  ``CREATE DATABASE tminus_verify_<random>`` (template0) on the server of ``server_url``,
  ``pg_restore -j 2 --exit-on-error`` into it, compare, ``DROP DATABASE … WITH (FORCE)`` in a
  ``finally`` (unless ``keep_scratch``).

The password never appears on a command line: tools get a URL without it and ``PGPASSWORD``.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import subprocess
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from psycopg import sql

from tminus import work
from tminus.backups.base import (
    BackupDir,
    BackupError,
    DbState,
    Manifest,
    SchemaObject,
    SequenceEntry,
    TableEntry,
    VerifyReport,
    diff_state,
    find_tool,
    intact_report,
    kill_tool,
    mask,
    redact_url,
    replace_database,
    require_intact,
    require_tools,
    run_tool,
    scratch_suffix,
    tail,
    tool_version,
    url_database,
    url_password,
)
from tminus.sqlrun import cancel_on_cancel, pg_session_setup

__all__ = ["PostgresDriver", "scratch_privilege_problem"]

DUMP_DIR = "dump"
_SESSION = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 3",
    "SET bytea_output = 'hex'",
    "SET search_path = pg_catalog",
)
_USER_SCHEMAS = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname NOT LIKE 'pg\\_%'
"""


def _schema_shape(conn: psycopg.Connection[Any], tables: set[str]) -> dict[str, Any]:
    """What the data needs, per table ``schema.table`` (see ``no_data_loss``): its columns,
    its indexes' key columns in order (expressions as text, with uniqueness), and its named
    constraints other than unique ones (primary key, foreign keys, checks, exclusions)."""
    columns: dict[str, list[str]] = {t: [] for t in tables}
    for s, t, c in conn.execute(
        f"""
        SELECT n.nspname, c.relname, a.attname FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped AND {_USER_SCHEMAS}
        ORDER BY 1, 2, a.attnum
        """
    ):
        columns.setdefault(f"{s}.{t}", []).append(c)
    index_columns: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in tables}
    for s, t, name, unique, cols in conn.execute(
        f"""
        SELECT n.nspname, c.relname, i.relname, x.indisunique,
               ARRAY(SELECT pg_get_indexdef(x.indexrelid, k, true)
                     FROM generate_series(1, x.indnkeyatts) AS k ORDER BY k)
        FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND {_USER_SCHEMAS}
        """
    ):
        index_columns.setdefault(f"{s}.{t}", {})[name] = {
            "columns": list(cols),
            "unique": bool(unique),
        }
    constraints: dict[str, dict[str, str]] = {t: {} for t in tables}
    kinds = {"p": "primary key", "f": "foreign key", "c": "check", "x": "exclusion"}
    for s, t, name, ctype in conn.execute(
        f"""
        SELECT n.nspname, c.relname, k.conname, k.contype FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND k.contype IN ('p', 'f', 'c', 'x') AND {_USER_SCHEMAS}
        """
    ):
        constraints.setdefault(f"{s}.{t}", {})[name] = kinds[str(ctype)]
    return {"columns": columns, "index_columns": index_columns, "constraints": constraints}


def _libpq_url(url: str) -> str:
    """A URL libpq tools accept, without the password."""
    u = redact_url(url)
    if u.startswith("postgresql+psycopg://"):
        u = "postgresql://" + u.split("://", 1)[1]
    return u


def _connect(url: str) -> psycopg.Connection[Any]:
    if url.startswith("postgresql+psycopg://"):
        url = "postgresql://" + url.split("://", 1)[1]
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise BackupError(
            mask(f"cannot connect to {redact_url(url)}: {exc}", [url_password(url)])
        ) from None
    for s in _SESSION:
        conn.execute(s)
    # A cancelled backup/restore/verify (tminus.work.in_thread) cancels this session's query.
    pg_session_setup(conn)
    cancel_on_cancel(conn)
    return conn


def scratch_privilege_problem(target_url: str) -> str | None:
    """Why the URL's role cannot create the scratch database ``verify`` restores into (it
    needs CREATEDB, or to be a superuser), or None when it can."""
    conn = _connect(target_url)
    try:
        row = conn.execute(
            "SELECT current_user, rolcreatedb OR rolsuper FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
    finally:
        conn.close()
    if row is None or row[1]:
        return None
    return (
        f"role {row[0]} cannot create databases (no CREATEDB), and verify_backup restores "
        f"into a scratch database: run ALTER ROLE {row[0]} CREATEDB, or verify as a role "
        "that has it"
    )


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    if row is None:
        raise BackupError(f"no result from {query!r}")
    return row[0]


def _ident(*parts: str) -> sql.Composable:
    return sql.Identifier(*parts)


#: Checksum algorithms (``Manifest.details["checksum"]``). A manifest without the key (format 1)
#: used ``md5``; new backups use ``row64`` (PostgreSQL >= 14), several times cheaper.
CHECKSUM_ROW64 = "row64"
CHECKSUM_MD5 = "md5"
CHECKSUMS = (CHECKSUM_ROW64, CHECKSUM_MD5)

#: Types whose own hash function sees exactly what their text output shows, so ``row64`` hashes
#: their values without printing them: int2, int4, int8, oid, bool, "char", date, time,
#: timestamp, timestamptz, uuid, bytea, text, varchar (the last two under COLLATE "C", so a
#: case-insensitive collation cannot hide a change). Anything else (numeric: 1.5 = 1.50;
#: float: -0 = 0; jsonb; enums, whose hash is their OID; domains, arrays…) is hashed as text.
_EXACT_TYPES = frozenset({21, 23, 20, 26, 16, 18, 1082, 1083, 1114, 1184, 2950, 17, 25, 1043})
_TEXT_TYPES = frozenset({25, 1043})

#: A table to checksum: schema, name, and its columns as (name, type oid) in attnum order.
_Rel = tuple[str, str, tuple[tuple[str, int], ...]]


def _row_hash(columns: tuple[tuple[str, int], ...]) -> sql.Composed:
    """``row64``'s hash of one row: ``hash_record_extended`` over the row's columns (exact
    types as they are, the rest as text), then mixed once more through ``hashtextextended``.
    The record hash combines its columns linearly (``h * 31 + h_i``), so a plain sum over rows
    would only add up column sums and miss two rows swapping a value; the second hash makes
    each row's contribution depend on the whole row."""
    parts: list[sql.Composable] = []
    for name, typ in columns:
        col = sql.SQL("t.{}").format(sql.Identifier(name))
        if typ in _TEXT_TYPES:
            parts.append(sql.SQL('{} COLLATE "C"').format(col))
        elif typ in _EXACT_TYPES:
            parts.append(col)
        else:
            parts.append(sql.SQL('{}::text COLLATE "C"').format(col))
    return sql.SQL("hashtextextended(hash_record_extended(ROW({}), 0)::text, 0)").format(
        sql.SQL(", ").join(parts)
    )


def _checksum_query(algorithm: str, rel: _Rel) -> sql.Composed:
    """Exact row count and the sums a table's checksum is made of, in one scan.

    ``row64`` sums :func:`_row_hash` over the rows exactly (``sum(bigint)`` is numeric).
    ``md5`` (format 1 manifests) sums both 64-bit halves of ``md5((t.*)::text)`` (the whole row
    as text, even when a column is named ``t``); ``OFFSET 0`` keeps the planner from inlining
    the subquery, which would compute the md5 once per sum.
    """
    schema, name, columns = rel
    table = _ident(schema, name)
    if algorithm == CHECKSUM_ROW64:
        return sql.SQL("SELECT count(*), coalesce(sum({}), 0) FROM {} t").format(
            _row_hash(columns), table
        )
    return sql.SQL(
        "SELECT count(*),"
        " coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0),"
        " coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)"
        " FROM (SELECT md5((t.*)::text) AS h FROM {} t OFFSET 0) s"
    ).format(table)


def _table_entry(conn: psycopg.Connection[Any], algorithm: str, rel: _Rel) -> TableEntry:
    row = conn.execute(_checksum_query(algorithm, rel)).fetchone()
    assert row is not None
    if algorithm == CHECKSUM_ROW64:
        text = f"{CHECKSUM_ROW64}:{int(row[1])}"
    else:
        text = f"{int(row[1])}:{int(row[2])}"
    return TableEntry(f"{rel[0]}.{rel[1]}", int(row[0]), hashlib.md5(text.encode()).hexdigest())


def _import_snapshot(url: str, snapshot: str) -> psycopg.Connection[Any]:
    """A new session whose transaction sees exactly the exported ``snapshot``."""
    conn = _connect(url)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    except BaseException:
        conn.close()
        raise
    return conn


def _table_entries(
    conn: psycopg.Connection[Any],
    rels: list[_Rel],
    algorithm: str,
    *,
    url: str | None,
    snapshot: str | None,
    jobs: int,
) -> list[TableEntry]:
    """Counts and checksums of ``rels`` (largest first). With ``jobs > 1`` and an exported
    ``snapshot``, ``jobs - 1`` more sessions import the snapshot and take tables from the same
    queue as ``conn``, so every table is read in the same instant as on one connection."""
    todo = deque(rels)
    out: dict[tuple[str, str], TableEntry] = {}
    lock = threading.Lock()
    failed = threading.Event()

    def work(c: psycopg.Connection[Any]) -> None:
        while not failed.is_set():
            with lock:
                if not todo:
                    return
                rel = todo.popleft()
            try:
                entry = _table_entry(c, algorithm, rel)
            except BaseException:
                failed.set()
                raise
            out[(rel[0], rel[1])] = entry

    def helper() -> None:
        assert url is not None and snapshot is not None
        try:
            c = _import_snapshot(url, snapshot)
        except BaseException:
            failed.set()
            raise
        try:
            work(c)
            c.execute("COMMIT")
        finally:
            c.close()

    extra = min(jobs, len(rels)) - 1 if url is not None and snapshot is not None else 0
    if extra <= 0:
        work(conn)
    else:
        with ThreadPoolExecutor(max_workers=extra, thread_name_prefix="tminus-checksum") as pool:
            # each helper in a copy of this context: its sessions join the cancel scope
            futures = [pool.submit(contextvars.copy_context().run, helper) for _ in range(extra)]
            try:
                work(conn)
            finally:
                errors = [f.exception() for f in futures]
            for exc in errors:
                if exc is not None:
                    raise exc
    return [out[key] for key in sorted(out)]  # (schema, name) order, as the catalog lists


def _state(
    conn: psycopg.Connection[Any],
    algorithm: str = CHECKSUM_ROW64,
    *,
    url: str | None = None,
    snapshot: str | None = None,
    jobs: int = 1,
) -> DbState:
    """Catalog, exact counts and checksums as seen by ``conn``'s current snapshot (shared with
    ``jobs - 1`` more sessions on ``url`` when ``snapshot`` names it, see
    :func:`_table_entries`)."""
    if algorithm not in CHECKSUMS:
        raise BackupError(f"unknown checksum algorithm {algorithm!r}")
    rows = conn.execute(
        f"""
        SELECT n.nspname, c.relname, a.attname, a.atttypid::int FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relkind = 'r' AND {_USER_SCHEMAS}
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY pg_table_size(c.oid) DESC, 1, 2, a.attnum
        """
    ).fetchall()
    columns: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for schema, name, col, typ in rows:  # largest table first, columns in order
        cols = columns.setdefault((str(schema), str(name)), [])
        if col is not None:
            cols.append((str(col), int(typ)))
    rels = [(s, n, tuple(cols)) for (s, n), cols in columns.items()]
    tables = _table_entries(conn, rels, algorithm, url=url, snapshot=snapshot, jobs=jobs)
    indexes = [
        SchemaObject(f"{s}.{i}", f"{s}.{t}", d)
        for s, t, i, d in conn.execute(
            f"""
            SELECT n.nspname, t.relname, c.relname, pg_get_indexdef(c.oid)
            FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {_USER_SCHEMAS} ORDER BY 1, 2, 3
            """
        )
    ]
    constraints = [
        SchemaObject(name, f"{s}.{t}", d)
        for s, t, name, d in conn.execute(
            f"""
            SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
            FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {_USER_SCHEMAS} ORDER BY 1, 2, 3
            """
        )
    ]
    sequences: list[SequenceEntry] = []
    for s_schema, s_name, t_schema, t_name, col in conn.execute(
        f"""
        SELECT sn.nspname, s.relname, tn.nspname, t.relname, a.attname
        FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
        JOIN pg_namespace sn ON sn.oid = s.relnamespace
        LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        LEFT JOIN pg_class t ON t.oid = d.refobjid
        LEFT JOIN pg_namespace tn ON tn.oid = t.relnamespace
        LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
        WHERE s.relkind = 'S' AND {_USER_SCHEMAS} ORDER BY 1, 2
        """
    ).fetchall():
        r = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(_ident(s_schema, s_name))
        ).fetchone()
        assert r is not None
        last = int(r[0]) if r[1] else int(r[0]) - 1  # not called: nextval returns last_value
        max_value = None
        if t_name is not None and col is not None:
            m = conn.execute(
                sql.SQL("SELECT max({}) FROM {}").format(_ident(col), _ident(t_schema, t_name))
            ).fetchone()
            max_value = None if m is None or m[0] is None else int(m[0])
        sequences.append(
            SequenceEntry(
                f"{s_schema}.{s_name}",
                f"{t_schema}.{t_name}" if t_name else None,
                col,
                last,
                max_value,
            )
        )
    return DbState(tables, indexes, constraints, sequences)


class PostgresDriver:
    kind: ClassVar[str] = "postgres"

    # ------------------------------------------------------------------ helpers
    def _env(self, url: str) -> dict[str, str]:
        pw = url_password(url)
        return {"PGPASSWORD": pw} if pw else {}

    def _pg_restore(self, dump: Path, url: str, jobs: int, *, what: str) -> None:
        binary = find_tool("pg_restore")
        assert binary is not None
        run_tool(
            [binary, "--exit-on-error", "--no-password", "-j", str(max(1, jobs)), "-d",
             _libpq_url(url), str(dump)],
            what=what,
            env=self._env(url),
            secrets=[url_password(url)],
        )  # fmt: skip

    # ------------------------------------------------------------------ protocol
    def backup(
        self, target_url: str, dest_dir: str | os.PathLike[str], *, jobs: int = 2
    ) -> Manifest:
        require_tools(self.kind)
        secrets = [url_password(target_url)]
        pg_dump = find_tool("pg_dump")
        pg_restore = find_tool("pg_restore")
        assert pg_dump is not None and pg_restore is not None
        dump_version = tool_version(pg_dump)
        with BackupDir(dest_dir, url_database(target_url) or "postgres") as bdir:
            conn = _connect(target_url)
            try:
                server_version = str(_scalar(conn, "SHOW server_version"))
                algorithm = (  # hash_record_extended: PostgreSQL 14
                    CHECKSUM_ROW64
                    if int(_scalar(conn, "SHOW server_version_num")) >= 140000
                    else CHECKSUM_MD5
                )
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                snapshot = str(_scalar(conn, "SELECT pg_export_snapshot()"))
                dump = bdir.work / DUMP_DIR
                with tempfile.TemporaryFile() as errf:
                    proc = work.popen(
                        [pg_dump, "-Fd", "-j", str(max(1, jobs)), f"--snapshot={snapshot}",
                         "--no-password", "-f", str(dump), "-d", _libpq_url(target_url)],
                        env={**os.environ, **self._env(target_url)},
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=errf,
                    )  # fmt: skip
                    try:
                        # the dump's snapshot, on `jobs` sessions, while pg_dump runs
                        state = _state(
                            conn, algorithm, url=target_url, snapshot=snapshot, jobs=jobs
                        )
                    except BaseException:
                        kill_tool(proc)
                        raise
                    rc = proc.wait()
                    errf.seek(0)
                    err = errf.read().decode("utf-8", "replace")
                if rc != 0:
                    raise BackupError(mask(f"pg_dump failed (exit {rc}): {tail(err)}", secrets))
                conn.execute("COMMIT")
            except psycopg.Error as exc:
                raise BackupError(
                    mask(f"backup of {redact_url(target_url)}: {exc}", secrets)
                ) from None
            finally:
                conn.close()
            if not state.tables:
                raise BackupError(
                    f"database {redact_url(target_url)} has no tables: nothing to back up "
                    "(an empty backup is refused)"
                )
            toc = run_tool([pg_restore, "--list", str(dump)], what="pg_restore --list").stdout
            missing = [
                t.name
                for t in state.tables
                if f" TABLE DATA {t.name.replace('.', ' ', 1)} " not in toc
            ]
            if missing:
                raise BackupError(f"the dump has no data for tables: {', '.join(missing)}")
            manifest = state.manifest(
                bdir,
                self.kind,
                redact_url(target_url),
                dump_version,
                server_version,
                {
                    "format": "pg_dump directory",
                    "dump_dir": DUMP_DIR,
                    "jobs": jobs,
                    "checksum": algorithm,
                },
            )
            return bdir.commit(manifest)

    def restore(
        self,
        manifest: Manifest,
        backup_dir: str | os.PathLike[str],
        target_url: str,
        *,
        jobs: int = 2,
    ) -> None:
        require_tools(self.kind)
        require_intact(manifest, backup_dir, self.kind)
        secrets = [url_password(target_url)]
        conn = _connect(target_url)
        try:
            version = int(_scalar(conn, "SHOW server_version_num"))
            schemas = [
                r[0]
                for r in conn.execute(
                    f"""
                    SELECT n.nspname FROM pg_namespace n WHERE {_USER_SCHEMAS}
                    AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid
                        AND d.deptype = 'e')
                    ORDER BY 1
                    """
                )
            ]
            with conn.transaction():
                conn.execute("SET LOCAL lock_timeout = '30s'")
                for s in schemas:
                    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(_ident(s)))
                if version >= 150000:
                    conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
                    conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
                else:
                    conn.execute("CREATE SCHEMA public")
                    conn.execute("GRANT ALL ON SCHEMA public TO PUBLIC")
                conn.execute("COMMENT ON SCHEMA public IS 'standard public schema'")
        except psycopg.Error as exc:
            raise BackupError(
                mask(f"cannot empty {redact_url(target_url)} for the restore: {exc}", secrets),
                hint="nothing was changed (the drop runs in one transaction)",
            ) from None
        finally:
            conn.close()
        try:
            self._pg_restore(
                Path(backup_dir) / DUMP_DIR, target_url, jobs, what="pg_restore into the target"
            )
        except BackupError as exc:
            raise BackupError(
                f"{exc} — the target is partly restored; restore again", hint="restore again"
            ) from None
        problems = self.compare(manifest, target_url, jobs=jobs)
        if problems:
            raise BackupError(
                f"restored {redact_url(target_url)} differs from backup {manifest.id}: "
                + "; ".join(problems)
            )

    def verify(
        self,
        manifest: Manifest,
        backup_dir: str | os.PathLike[str],
        server_url: str,
        *,
        scratch_name: str | None = None,
        keep_scratch: bool = False,
    ) -> VerifyReport:
        require_tools(self.kind)
        report, intact = intact_report(manifest, backup_dir, self.kind)
        if not intact:
            return report
        name = scratch_name or f"tminus_verify_{scratch_suffix()}"
        scratch_url = replace_database(server_url, name)
        secrets = [url_password(server_url)]
        admin = _connect(server_url)
        try:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(_ident(name)))
        except psycopg.Error as exc:
            admin.close()
            raise BackupError(
                mask(f"cannot create scratch database {name}: {exc}", secrets)
            ) from None
        report.scratch = name
        try:
            self._pg_restore(
                Path(backup_dir) / DUMP_DIR, scratch_url, 2, what="pg_restore into scratch"
            )
            report.mismatches += self.compare(manifest, scratch_url, jobs=2)
            report.checked_tables = len(manifest.tables)
            report.checked_rows = sum(t.rows for t in manifest.tables)
        except BackupError as exc:
            report.mismatches.append(str(exc))
        finally:
            if keep_scratch:
                report.scratch_kept = True
            else:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_ident(name))
                )
            admin.close()
        return report

    def compare(self, manifest: Manifest, target_url: str, *, jobs: int = 1) -> list[str]:
        """Every difference between the target and the manifest, with the manifest's checksum
        algorithm; tables are read in one snapshot, on ``jobs`` sessions sharing it."""
        algorithm = str(manifest.details.get("checksum", CHECKSUM_MD5))
        if algorithm not in CHECKSUMS:
            raise BackupError(
                f"backup {manifest.id} uses checksum algorithm {algorithm!r}, "
                f"unknown to this version of tminus"
            )
        conn = _connect(target_url)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = str(_scalar(conn, "SELECT pg_export_snapshot()")) if jobs > 1 else None
            state = _state(conn, algorithm, url=target_url, snapshot=snapshot, jobs=jobs)
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise BackupError(
                mask(f"cannot read {redact_url(target_url)}: {exc}", [url_password(target_url)])
            ) from None
        finally:
            conn.close()
        return diff_state(manifest, state)

    def snapshot(self, target_url: str) -> dict[str, Any]:
        conn = _connect(target_url)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            rels = conn.execute(
                f"""
                SELECT n.nspname, c.relname FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'r' AND {_USER_SCHEMAS} ORDER BY 1, 2
                """
            ).fetchall()
            tables: dict[str, int] = {}
            for s, t in rels:
                row = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(_ident(s, t))
                ).fetchone()
                tables[f"{s}.{t}"] = int(row[0]) if row else 0
            indexes = [
                f"{s}.{i}"
                for s, i in conn.execute(
                    f"""
                    SELECT n.nspname, c.relname FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relkind IN ('i', 'I') AND {_USER_SCHEMAS} ORDER BY 1, 2
                    """
                )
            ]
            shape = _schema_shape(conn, set(tables))
            conn.execute("COMMIT")
        finally:
            conn.close()
        return {
            "kind": self.kind,
            "target": redact_url(target_url),
            "tables": tables,
            "indexes": indexes,
            **shape,
            "total_rows": sum(tables.values()),
        }

    def estimate_size(self, target_url: str) -> int:
        conn = _connect(target_url)
        try:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return int(row[0]) if row else 0
        finally:
            conn.close()
