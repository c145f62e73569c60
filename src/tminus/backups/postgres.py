"""PostgreSQL backups: ``pg_dump -Fd -j N --snapshot`` with the manifest computed in the very
snapshot the dump reads.

Backup
  1. A connection opens a ``REPEATABLE READ, READ ONLY`` transaction and runs
     ``SELECT pg_export_snapshot()``; the transaction stays open until the dump ends.
  2. ``pg_dump -v -Fd -j N --snapshot=<id>`` writes ``dump/`` (directory format, one
     compressed file per table) from that snapshot, while the same transaction computes,
     server-side, for every user table the exact row count and an order-independent checksum,
     plus indexes (``pg_get_indexdef``), constraints (``pg_get_constraintdef``) and sequences
     owned by serial/identity columns with ``max(column)``. Counts and checksums run on up to
     N sessions (N - 1 more import the snapshot with ``SET TRANSACTION SNAPSHOT``) taking
     tables from one queue, each session one backend without parallel workers, and each
     taking the place of one of pg_dump's workers gone idle for good: session k starts once
     all but N - k - 1 tables are dumped (pg_dump's ``finished item … TABLE DATA``, read as
     :mod:`._pg_progress` reads them) or pg_dump has ended. So the server has at most N of
     the backup's sessions busy, as with pg_dump alone, and the checksums run in the dump's
     tail, where its last tables leave workers idle; ``-j 1`` (which announces nothing)
     checksums after the dump. A failed pg_dump is reported as soon as it ends. Counts and
     dump describe the same instant.
  3. ``pg_restore --list`` must read the dump's table of contents and find ``TABLE DATA`` for
     every table of the manifest (it runs while the files are hashed, and is checked before
     the manifest is written; ``pg_dump --version`` runs while the dump starts). The
     manifest records ``pg_dump --version``, ``SHOW server_version`` and the checksum
     algorithm (``details.checksum``).

Checksum of a table (see :func:`_checksum_query`): every row hashed, the hashes summed exactly
over all rows, the checksum the md5 of the sum(s). New format 2 manifests use ``chain64``
(PostgreSQL >= 14: each value hashed by its type's seeded hash function, seeded with the hash
of the columns before it, exact types as they are and the rest as text, a null mask last; one
sum), older ones ``row64`` (``hash_record_extended`` over the row, mixed again through
``hashtextextended``), format 1 manifests ``md5`` (both 64-bit halves of ``md5((t.*)::text)``,
two sums); a manifest is verified with its own algorithm.
This is order-independent and counts duplicates like ``md5(string_agg(md5(t::text), '' ORDER
BY …))``, but needs constant memory: ``string_agg`` stops at 1 GB of text (~33 M rows). Text
output is pinned (UTC, ISO dates, ``extra_float_digits=3``, hex bytea, ``search_path=pg_catalog``)
so that two sessions print values identically.

Restore (decision: in place, into the target database itself)
  Files are checked first (size and sha256 of every file; ``pg_restore --list`` meanwhile must
  read the table of contents); a damaged backup is refused before anything is touched. Then,
  in one transaction with ``lock_timeout`` 30 s, every non-system schema of the target is
  dropped (``DROP SCHEMA … CASCADE``) and an empty ``public`` is
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

The code: connections and catalog queries in :mod:`tminus.backups._postgres_db`, the
checksummed state of a database in :mod:`tminus.backups._postgres_state`; this module holds
the driver.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import Future
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from psycopg import sql

from tminus import work
from tminus.backups._pg_progress import Announcements, plain_env
from tminus.backups._postgres_db import (
    _USER_SCHEMAS,
    _ident,
    _libpq_url,
    _scalar,
    _schema_shape,
)
from tminus.backups._postgres_db import _connect as _connect
from tminus.backups._postgres_restore import restore_checksummed
from tminus.backups._postgres_state import CHECKSUM_CHAIN64 as CHECKSUM_CHAIN64
from tminus.backups._postgres_state import CHECKSUM_MD5 as CHECKSUM_MD5
from tminus.backups._postgres_state import CHECKSUM_ROW64 as CHECKSUM_ROW64
from tminus.backups._postgres_state import CHECKSUMS
from tminus.backups._postgres_state import _state as _state
from tminus.backups.backup_dir import BackupDir
from tminus.backups.base import (
    BackupError,
    Manifest,
    TableEntry,
    VerifyReport,
    find_tool,
    redact_url,
    require_intact,
    url_password,
)
from tminus.backups.compare import diff_state, intact_report
from tminus.backups.tools import (
    in_background,
    kill_tool,
    mask,
    replace_database,
    require_tools,
    run_tool,
    scratch_suffix,
    tail,
    tool_version,
    url_database,
)

__all__ = ["PostgresDriver", "scratch_privilege_problem"]

DUMP_DIR = "dump"


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


class PostgresDriver:
    kind: ClassVar[str] = "postgres"

    # ------------------------------------------------------------------ helpers
    def _env(self, url: str) -> dict[str, str]:
        pw = url_password(url)
        return {"PGPASSWORD": pw} if pw else {}

    def _listing(self, dump: Path) -> Future[subprocess.CompletedProcess[str]]:
        """``pg_restore --list`` of ``dump`` (its table of contents), in the background: it
        runs while the files are hashed."""
        binary = find_tool("pg_restore")
        assert binary is not None
        return in_background(run_tool, [binary, "--list", str(dump)], what="pg_restore --list")

    def _restore_checked(
        self,
        manifest: Manifest,
        dump: Path,
        url: str,
        jobs: int,
        *,
        what: str,
        toc: str,
    ) -> list[str]:
        """``pg_restore -j jobs`` of ``dump`` into ``url``, each table checksummed as soon as
        its data is in (:mod:`._postgres_restore`; ``toc``: ``pg_restore --list`` of ``dump``),
        then every difference from the manifest. A failed pg_restore is a
        :class:`BackupError`."""
        binary = find_tool("pg_restore")
        assert binary is not None
        algorithm = self._algorithm(manifest)
        known = restore_checksummed(
            binary,
            dump,
            toc,
            url,
            [t.name for t in manifest.tables],
            algorithm,
            jobs=jobs,
            env={**os.environ, **self._env(url)},
            secrets=[url_password(url)],
            what=what,
        )
        return self.compare(manifest, url, jobs=jobs, known=known)

    def _algorithm(self, manifest: Manifest) -> str:
        algorithm = str(manifest.details.get("checksum", CHECKSUM_MD5))
        if algorithm not in CHECKSUMS:
            raise BackupError(
                f"backup {manifest.id} uses checksum algorithm {algorithm!r}, "
                f"unknown to this version of tminus"
            )
        return algorithm

    # ------------------------------------------------------------------ protocol
    def backup(
        self, target_url: str, dest_dir: str | os.PathLike[str], *, jobs: int = 2
    ) -> Manifest:
        require_tools(self.kind)
        secrets = [url_password(target_url)]
        pg_dump = find_tool("pg_dump")
        pg_restore = find_tool("pg_restore")
        assert pg_dump is not None and pg_restore is not None
        dump_version = in_background(tool_version, pg_dump)
        with BackupDir(dest_dir, url_database(target_url) or "postgres") as bdir:
            conn = _connect(target_url)
            try:
                server_version = str(_scalar(conn, "SHOW server_version"))
                algorithm = (  # hash_record_extended: PostgreSQL 14
                    CHECKSUM_CHAIN64
                    if int(_scalar(conn, "SHOW server_version_num")) >= 140000
                    else CHECKSUM_MD5
                )
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                snapshot = str(_scalar(conn, "SELECT pg_export_snapshot()"))
                dump = bdir.work / DUMP_DIR
                proc = work.popen(
                    [pg_dump, "-v", "-Fd", "-j", str(max(1, jobs)), f"--snapshot={snapshot}",
                     "--no-password", "-f", str(dump), "-d", _libpq_url(target_url)],
                    env=plain_env({**os.environ, **self._env(target_url)}),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )  # fmt: skip
                assert proc.stderr is not None
                said = Announcements(proc.stderr)

                def failed(rc: int) -> BackupError:
                    err = tail(said.join())
                    return BackupError(mask(f"pg_dump failed (exit {rc}): {err}", secrets))

                def room(tables: int, k: int) -> None:
                    # checksum session k starts when k + 1 of pg_dump's workers are idle for
                    # good (all but jobs - k - 1 tables dumped) or pg_dump has ended: at most
                    # `jobs` busy sessions on the server, as pg_dump alone (-j 1 announces
                    # nothing: its checksums follow the dump)
                    said.wait_finished(tables - jobs + 1 + k)
                    if said.ended and (rc := proc.wait()) != 0:
                        raise failed(rc)  # a failed dump: no checksums to wait for

                try:
                    # the dump's snapshot, on `jobs` sessions, beside pg_dump
                    state = _state(
                        conn,
                        algorithm,
                        url=target_url,
                        snapshot=snapshot,
                        jobs=jobs,
                        gate=room,
                        single=True,
                    )
                except BaseException:
                    kill_tool(proc, read=False)  # `said` reads its stderr to the end
                    said.join()
                    raise
                rc = proc.wait()
                said.join()
                if rc != 0:
                    raise failed(rc)
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
            listing = self._listing(dump)  # while the files are hashed

            def listed() -> None:
                toc = listing.result().stdout
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
                dump_version.result(),
                server_version,
                {
                    "format": "pg_dump directory",
                    "dump_dir": DUMP_DIR,
                    "jobs": jobs,
                    "checksum": algorithm,
                },
            )
            return bdir.commit(manifest, check=listed)

    def restore(
        self,
        manifest: Manifest,
        backup_dir: str | os.PathLike[str],
        target_url: str,
        *,
        jobs: int = 2,
    ) -> None:
        require_tools(self.kind)
        listing = self._listing(Path(backup_dir) / DUMP_DIR)  # while the files are hashed
        require_intact(manifest, backup_dir, self.kind)
        toc = listing.result().stdout  # a listing pg_restore cannot read: nothing touched
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
            problems = self._restore_checked(
                manifest,
                Path(backup_dir) / DUMP_DIR,
                target_url,
                jobs,
                what="pg_restore into the target",
                toc=toc,
            )
        except BackupError as exc:
            raise BackupError(
                f"{exc} — the target is partly restored; restore again", hint="restore again"
            ) from None
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
        listing = self._listing(Path(backup_dir) / DUMP_DIR)  # while the files are hashed
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
            report.mismatches += self._restore_checked(
                manifest,
                Path(backup_dir) / DUMP_DIR,
                scratch_url,
                2,
                what="pg_restore into scratch",
                toc=listing.result().stdout,
            )
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

    def compare(
        self,
        manifest: Manifest,
        target_url: str,
        *,
        jobs: int = 1,
        known: dict[tuple[str, str], TableEntry] | None = None,
    ) -> list[str]:
        """Every difference between the target and the manifest, with the manifest's checksum
        algorithm; tables are read in one snapshot, on ``jobs`` sessions sharing it, except
        those of ``known`` (``(schema, table)`` entries a restore computed as each table's
        data landed, see :mod:`._postgres_restore`)."""
        algorithm = self._algorithm(manifest)
        conn = _connect(target_url)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = str(_scalar(conn, "SELECT pg_export_snapshot()")) if jobs > 1 else None
            state = _state(
                conn, algorithm, url=target_url, snapshot=snapshot, jobs=jobs, known=known
            )
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
