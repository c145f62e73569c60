"""MariaDB and MySQL backups: ``mariadb-dump`` (or ``mysqldump``) ``--single-transaction``, with
the manifest computed in a snapshot proven identical to the dump's.

The snapshot caveat
  ``mysqldump`` opens its own ``START TRANSACTION WITH CONSISTENT SNAPSHOT``; unlike PostgreSQL
  there is no way to hand it a snapshot. Counting rows in another transaction "at about the
  same time" would let the manifest and the dump disagree under write load, and computing the
  manifest from a restored copy of the dump would make the manifest agree with a dump that
  silently lost rows (the failure this module exists to catch). So the two snapshots are made
  equal by blocking writes while both are taken:

  1. our connection runs ``FLUSH TABLES WITH READ LOCK`` (``lock_wait_timeout`` 30 s) and then
     ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` (the global read lock survives it);
  2. the dump tool starts with ``--verbose``; its progress lines on stderr (unbuffered) show
     when its own ``START TRANSACTION`` has completed (the line after ``-- Starting
     transaction...``, or its first ``-- Retrieving table structure``);
  3. only then ``UNLOCK TABLES``: no write could commit between the two snapshots, so they see
     the same data. Writes are blocked for the time it takes the tool to connect (well under a
     second); reads never are.

  Row counts, checksums and ``max(id)`` are then computed in our snapshot while the dump runs.
  This needs the ``RELOAD`` privilege (or ``FLUSH_TABLES``); without it the backup fails with
  a clear message instead of silently recording counts from another instant. Tables of
  non-transactional engines (MyISAM, Aria) are not covered by any snapshot: the manifest lists
  them under ``details.non_transactional`` and a concurrent write to them shows up as a
  verification mismatch, never as a silent pass.

Checksum of a table: ``h = MD5(CONCAT_WS(',', QUOTE(col1), QUOTE(col2), …))`` per row (``QUOTE``
makes NULL and strings unambiguous); the two 64-bit halves of ``h`` are summed over all rows
(exact DECIMAL) and the checksum is the md5 of both sums — order-independent, constant memory
(``GROUP_CONCAT`` is capped by ``group_concat_max_len``; ``CHECKSUM TABLE`` depends on the row
format, so a restored copy may differ). ``AUTO_INCREMENT`` counters are recorded as sequences
(``last_value = AUTO_INCREMENT - 1`` must be ``>= max(id)``).

The dump (``dump.sql.gz``) has no ``CREATE DATABASE``/``USE``, so it restores into any schema.
It must end with ``-- Dump completed`` and contain ``Dumping data for table`` for every table.

Restore: files checked first; then ``DROP DATABASE``/``CREATE DATABASE`` with the recorded
character set and collation (grants live in ``mysql.db`` and survive), the dump piped into the
``mariadb`` (or ``mysql``) client, its exit status checked, and the schema compared with the
manifest. Verify: the same into a scratch schema ``tminus_verify_<random>``, dropped after.

The password goes into a 0600 ``--defaults-extra-file`` (never argv, never ``MYSQL_PWD``).

The code: connections and catalog queries in :mod:`tminus.backups._mysql_db`, the checksummed
state of a schema in :mod:`tminus.backups._mysql_state`, the dump under the snapshot handshake
and the load in :mod:`tminus.backups._mysql_dump`; this module holds the driver.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import pymysql  # type: ignore[import-untyped]

from tminus.backups._mysql_db import (
    MysqlUrl,
    _connect,
    _defaults_file,
    _q,
    _rows,
    _schema_shape,
    _session,
)
from tminus.backups._mysql_dump import DUMP_FILE, _dump, _load
from tminus.backups._mysql_state import _state
from tminus.backups.backup_dir import BackupDir
from tminus.backups.base import (
    BackupError,
    Manifest,
    VerifyReport,
    find_tool,
    redact_url,
    require_intact,
)
from tminus.backups.compare import diff_state, intact_report, require_match
from tminus.backups.tools import (
    mask,
    replace_database,
    require_tools,
    scratch_suffix,
    tail,
    tool_version,
)

__all__ = ["MysqlDriver", "MysqlUrl", "scratch_privilege_problem"]


def scratch_privilege_problem(target_url: str) -> str | None:
    """Why the URL's account cannot create the scratch schema ``verify`` restores into
    (``tminus_verify_…``: it needs the CREATE privilege globally or on such schemas), or
    None when it can."""
    u = MysqlUrl.parse(target_url)
    conn = _connect(u)
    try:
        (account,) = _rows(conn, "SELECT CURRENT_USER()")[0]
        user, _, host = str(account).rpartition("@")
        grantee = f"'{user}'@'{host}'"
        (granted,) = _rows(
            conn,
            "SELECT (SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES "
            "        WHERE GRANTEE = %s AND PRIVILEGE_TYPE = 'CREATE') "
            "     + (SELECT COUNT(*) FROM information_schema.SCHEMA_PRIVILEGES "
            "        WHERE GRANTEE = %s AND PRIVILEGE_TYPE = 'CREATE' "
            "        AND 'tminus_verify_0' LIKE TABLE_SCHEMA)",
            (grantee, grantee),
        )[0]
    finally:
        conn.close()
    if int(granted):
        return None
    return (
        f"account {account} has no CREATE privilege, and verify_backup restores into a "
        f"scratch schema (tminus_verify_…): run GRANT CREATE, DROP ON *.* TO {grantee} (or on "
        "`tminus\\_verify\\_%`.*), or verify as an account that has it"
    )


class MysqlDriver:
    kind: ClassVar[str] = "mysql"

    def _dump_tool(self) -> str:
        tool = find_tool("mariadb-dump", "mysqldump")
        assert tool is not None
        return tool

    def _client(self) -> str:
        tool = find_tool("mariadb", "mysql")
        assert tool is not None
        return tool

    # ------------------------------------------------------------------ backup
    def backup(
        self, target_url: str, dest_dir: str | os.PathLike[str], *, jobs: int = 2
    ) -> Manifest:
        """``jobs`` is accepted for symmetry; the dump tool is single-threaded."""
        require_tools(self.kind)
        u = MysqlUrl.parse(target_url)
        if not u.database:
            raise BackupError(f"{redact_url(target_url)} names no database (schema)")
        secrets = [u.password]
        dump_tool = self._dump_tool()
        dump_version = tool_version(dump_tool)
        with BackupDir(dest_dir, u.database) as bdir:
            conn = _connect(u)
            try:
                _session(conn)
                server_version = str(_rows(conn, "SELECT VERSION()")[0][0])
                charset = _rows(
                    conn,
                    "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                    "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                    (u.database,),
                )
                if not charset:
                    raise BackupError(f"database {u.database!r} does not exist")
                with _defaults_file(u) as opts:
                    argv = [
                        dump_tool, *opts, "--verbose", "--single-transaction", "--routines",
                        "--triggers", "--events", "--hex-blob", "--default-character-set=utf8mb4",
                        "--skip-dump-date", u.database,
                    ]  # fmt: skip
                    state, non_tx, result = _dump(conn, argv, bdir.work / DUMP_FILE)
            except pymysql.MySQLError as exc:
                raise BackupError(
                    mask(f"backup of {redact_url(target_url)}: {exc}", secrets)
                ) from None
            finally:
                conn.close()
            rc, err, completed, dumped = result
            if rc != 0:
                raise BackupError(mask(f"{dump_tool} failed (exit {rc}): {tail(err)}", secrets))
            if not completed:
                raise BackupError("the dump does not end with '-- Dump completed': it is truncated")
            if not state.tables:
                raise BackupError(
                    f"database {u.database!r} has no tables: nothing to back up "
                    "(an empty backup is refused)"
                )
            missing = [t.name for t in state.tables if t.name not in dumped]
            if missing:
                raise BackupError(f"the dump has no data for tables: {', '.join(missing)}")
            manifest = state.manifest(
                bdir,
                self.kind,
                redact_url(target_url),
                dump_version,
                server_version,
                {
                    "format": "sql (gzip)",
                    "dump_file": DUMP_FILE,
                    "database": u.database,
                    "charset": charset[0][0],
                    "collation": charset[0][1],
                    "non_transactional": non_tx,
                    "consistency": "FLUSH TABLES WITH READ LOCK around both snapshots",
                },
            )
            return bdir.commit(manifest)

    # ------------------------------------------------------------------ restore
    def _recreate(self, conn: Any, db: str, manifest: Manifest) -> None:
        charset = str(manifest.details.get("charset") or "utf8mb4")
        collation = manifest.details.get("collation")
        with conn.cursor() as cur:
            cur.execute("SET SESSION lock_wait_timeout = 30")
            cur.execute(f"DROP DATABASE IF EXISTS {_q(db)}")
            cur.execute(
                f"CREATE DATABASE {_q(db)} CHARACTER SET {charset}"
                + (f" COLLATE {collation}" if collation else "")
            )

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
        u = MysqlUrl.parse(target_url)
        if not u.database:
            raise BackupError(f"{redact_url(target_url)} names no database (schema)")
        conn = _connect(u)
        try:
            self._recreate(conn, u.database, manifest)
        except pymysql.MySQLError as exc:
            raise BackupError(
                mask(f"cannot recreate {u.database!r}: {exc}", [u.password])
            ) from None
        finally:
            conn.close()
        try:
            _load(self._client(), manifest, Path(backup_dir), u, u.database)
        except BackupError as exc:
            raise BackupError(f"{exc} — the target is partly restored; restore again") from None
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
        u = MysqlUrl.parse(server_url)
        name = scratch_name or f"tminus_verify_{scratch_suffix()}"
        admin = _connect(u)
        try:
            with admin.cursor() as cur:
                cur.execute(f"CREATE DATABASE {_q(name)}")
        except pymysql.MySQLError as exc:
            admin.close()
            raise BackupError(
                mask(f"cannot create scratch schema {name}: {exc}", [u.password])
            ) from None
        report.scratch = name
        try:
            self._recreate(admin, name, manifest)
            _load(self._client(), manifest, Path(backup_dir), u, name)
            report.mismatches += self.compare(manifest, replace_database(server_url, name))
            report.checked_tables = len(manifest.tables)
            report.checked_rows = sum(t.rows for t in manifest.tables)
        except (BackupError, pymysql.MySQLError) as exc:
            report.mismatches.append(str(exc))
        finally:
            if keep_scratch:
                report.scratch_kept = True
            else:
                with admin.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS {_q(name)}")
            admin.close()
        return report

    def compare(self, manifest: Manifest, target_url: str) -> list[str]:
        u = MysqlUrl.parse(target_url)
        conn = _connect(u)
        try:
            _session(conn)
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            state, _ = _state(conn, u.database)
            with conn.cursor() as cur:
                cur.execute("COMMIT")
        except pymysql.MySQLError as exc:
            raise BackupError(
                mask(f"cannot read {redact_url(target_url)}: {exc}", [u.password])
            ) from None
        finally:
            conn.close()
        return diff_state(manifest, state)

    def snapshot(self, target_url: str) -> dict[str, Any]:
        u = MysqlUrl.parse(target_url)
        conn = _connect(u)
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            names = [
                r[0]
                for r in _rows(
                    conn,
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                    "AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1",
                    (u.database,),
                )
            ]
            tables = {
                n: int(_rows(conn, f"SELECT COUNT(*) FROM {_q(u.database)}.{_q(n)}")[0][0])
                for n in names
            }
            indexes = sorted(
                {
                    f"{t}.{i}"
                    for t, i in _rows(
                        conn,
                        "SELECT TABLE_NAME, INDEX_NAME FROM information_schema.STATISTICS "
                        "WHERE TABLE_SCHEMA = %s",
                        (u.database,),
                    )
                }
            )
            shape = _schema_shape(conn, u.database, set(names))
            with conn.cursor() as cur:
                cur.execute("COMMIT")
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
        u = MysqlUrl.parse(target_url)
        conn = _connect(u)
        try:
            row = _rows(
                conn,
                "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) "
                "FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s",
                (u.database,),
            )
            return int(row[0][0])
        finally:
            conn.close()
