"""PostgreSQL backups: ``pg_dump -Fd -j N --snapshot`` with the manifest computed in the very
snapshot the dump reads.

Backup
  1. A connection opens a ``REPEATABLE READ, READ ONLY`` transaction and runs
     ``SELECT pg_export_snapshot()``; the transaction stays open until the dump ends.
  2. ``pg_dump -Fd -j N --snapshot=<id>`` writes ``dump/`` (directory format, one compressed
     file per table) from that snapshot, while the same transaction computes, server-side, for
     every user table the exact row count and an order-independent checksum, plus indexes
     (``pg_get_indexdef``), constraints (``pg_get_constraintdef``) and sequences owned by
     serial/identity columns with ``max(column)``. Counts and dump therefore describe the
     same instant.
  3. ``pg_restore --list`` must read the dump's table of contents and find ``TABLE DATA`` for
     every table of the manifest. The manifest records ``pg_dump --version`` and
     ``SHOW server_version``.

Checksum of a table: for each row ``h = md5((t.*)::text)``; the two 64-bit halves of ``h``
are summed over all rows (``sum(bigint)`` is exact) and the checksum is the md5 of both sums.
This is
order-independent and counts duplicates like ``md5(string_agg(md5(t::text), '' ORDER BY …))``,
but needs constant memory: ``string_agg`` stops at 1 GB of text (~33 M rows). Text output is
pinned (UTC, ISO dates, ``extra_float_digits=3``, hex bytea, ``search_path=pg_catalog``) so
that two sessions print rows identically.

Restore (decision: in place, into the target database itself)
  Files are checked first (size and sha256 of every file); a damaged backup is refused before
  anything is touched. Then, in one transaction with ``lock_timeout`` 30 s, every non-system
  schema of the target is dropped (``DROP SCHEMA … CASCADE``) and an empty ``public`` is
  recreated with the server's defaults, so objects created after the backup (a new table of a
  migration) do not survive. ``pg_restore -j N --exit-on-error`` then restores the dump and the
  target is compared with the manifest (tables, row counts, checksums, indexes, constraints,
  sequences); any difference is a :class:`BackupError`. The target keeps its name, owner,
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

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from psycopg import sql

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
    mask,
    redact_url,
    replace_database,
    require_intact,
    require_match,
    require_tools,
    run_tool,
    scratch_suffix,
    tail,
    tool_version,
    url_database,
    url_password,
)

__all__ = ["PostgresDriver"]

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
    return conn


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    if row is None:
        raise BackupError(f"no result from {query!r}")
    return row[0]


def _ident(*parts: str) -> sql.Composable:
    return sql.Identifier(*parts)


def _state(conn: psycopg.Connection[Any]) -> DbState:
    """Catalog, exact counts and checksums as seen by ``conn``'s current snapshot."""
    tables: list[TableEntry] = []
    rels = conn.execute(
        f"""
        SELECT n.nspname, c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND {_USER_SCHEMAS}
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1, 2
        """
    ).fetchall()
    for schema, name in rels:
        q = sql.SQL(
            "SELECT count(*),"
            " coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint), 0),"
            " coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint), 0)"
            # (t.*): the whole row even when a column is named t; OFFSET 0 keeps the planner
            # from inlining the subquery, which would compute md5 once per sum.
            " FROM (SELECT md5((t.*)::text) AS h FROM {} t OFFSET 0) s"
        ).format(_ident(schema, name))
        row = conn.execute(q).fetchone()
        assert row is not None
        digest = hashlib.md5(f"{int(row[1])}:{int(row[2])}".encode()).hexdigest()
        tables.append(TableEntry(f"{schema}.{name}", int(row[0]), digest))
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
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                snapshot = str(_scalar(conn, "SELECT pg_export_snapshot()"))
                dump = bdir.work / DUMP_DIR
                with tempfile.TemporaryFile() as errf:
                    proc = subprocess.Popen(
                        [pg_dump, "-Fd", "-j", str(max(1, jobs)), f"--snapshot={snapshot}",
                         "--no-password", "-f", str(dump), "-d", _libpq_url(target_url)],
                        env={**os.environ, **self._env(target_url)},
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=errf,
                    )  # fmt: skip
                    try:
                        state = _state(conn)  # same snapshot as the dump, while it runs
                    except BaseException:
                        proc.kill()
                        proc.wait()
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
            manifest = Manifest(
                id=bdir.id,
                kind=self.kind,
                target=redact_url(target_url),
                created_at=bdir.created_at,
                tool_version=dump_version,
                server_version=server_version,
                files=[],
                tables=state.tables,
                indexes=state.indexes,
                constraints=state.constraints,
                sequences=state.sequences,
                details={"format": "pg_dump directory", "dump_dir": DUMP_DIR, "jobs": jobs},
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
        require_match(self, manifest, target_url, redact_url(target_url))

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
            report.mismatches += self.compare(manifest, scratch_url)
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

    def compare(self, manifest: Manifest, target_url: str) -> list[str]:
        conn = _connect(target_url)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            state = _state(conn)
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
            conn.execute("COMMIT")
        finally:
            conn.close()
        return {
            "kind": self.kind,
            "target": redact_url(target_url),
            "tables": tables,
            "indexes": indexes,
            "total_rows": sum(tables.values()),
        }

    def estimate_size(self, target_url: str) -> int:
        conn = _connect(target_url)
        try:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
            return int(row[0]) if row else 0
        finally:
            conn.close()
