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
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

import pymysql  # type: ignore[import-untyped]

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
    require_match,
    require_tools,
    scratch_suffix,
    tail,
    tool_version,
)
from tminus.sqlrun import cancel_on_cancel

__all__ = ["MysqlDriver", "MysqlUrl", "scratch_privilege_problem"]

DUMP_FILE = "dump.sql.gz"
_COMPLETED = b"-- Dump completed"
_DATA_MARK = b"-- Dumping data for table `"
_HANDSHAKE_TIMEOUT = 60.0


@dataclass(frozen=True)
class MysqlUrl:
    """The parts of ``mysql://user:password@host:port/database?unix_socket=…``."""

    host: str
    port: int
    user: str
    password: str | None
    database: str
    socket: str | None = None

    @classmethod
    def parse(cls, url: str) -> MysqlUrl:
        parts = urlsplit(url)
        if parts.scheme.split("+", 1)[0] not in ("mysql", "mariadb"):
            raise BackupError(f"not a mysql:// or mariadb:// URL: {redact_url(url)}")
        query = dict(parse_qsl(parts.query))
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password) if parts.password else query.get("password"),
            database=unquote(parts.path.lstrip("/")),
            socket=query.get("unix_socket"),
        )


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _connect(u: MysqlUrl, *, database: str | None = None) -> Any:
    try:
        conn = pymysql.connect(
            host=u.host,
            port=u.port,
            user=u.user,
            password=u.password or "",
            database=database,
            unix_socket=u.socket,
            charset="utf8mb4",
            autocommit=True,
            connect_timeout=10,
        )
    except pymysql.MySQLError as exc:
        raise BackupError(
            mask(f"cannot connect to {u.host}:{u.port}: {exc}", [u.password])
        ) from None
    cancel_on_cancel(conn)  # a cancelled backup/restore (tminus.work) KILLs its query
    return conn


def _rows(conn: Any, query: str, args: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, args)
        return list(cur.fetchall())


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


def _schema_shape(conn: Any, database: str, tables: set[str]) -> dict[str, Any]:
    """What the data needs, per table (see ``no_data_loss``): its columns, its indexes' key
    columns in order (with uniqueness), and its named constraints (primary key, foreign keys,
    checks). Index names are recorded but compared by columns: InnoDB drops the index it
    created implicitly for a foreign key when another index starts with the key's columns."""
    columns: dict[str, list[str]] = {t: [] for t in tables}
    for t, c in _rows(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
        (database,),
    ):
        if t in columns:
            columns[t].append(c)
    index_columns: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in tables}
    for t, name, non_unique, col in _rows(
        conn,
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COALESCE(COLUMN_NAME, '(expression)') "
        "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
        "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
        (database,),
    ):
        if t in index_columns:
            entry = index_columns[t].setdefault(
                name, {"columns": [], "unique": not int(non_unique)}
            )
            entry["columns"].append(col)
    constraints: dict[str, dict[str, str]] = {t: {} for t in tables}
    for t, name, ctype in _rows(
        conn,
        "SELECT TABLE_NAME, CONSTRAINT_NAME, CONSTRAINT_TYPE "
        "FROM information_schema.TABLE_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s "
        "AND CONSTRAINT_TYPE <> 'UNIQUE'",
        (database,),
    ):
        if t in constraints:
            constraints[t][name] = str(ctype).lower()
    return {"columns": columns, "index_columns": index_columns, "constraints": constraints}


@contextmanager
def _defaults_file(u: MysqlUrl) -> Iterator[list[str]]:
    """Client options, with the password in a private defaults file (first argument)."""
    with tempfile.TemporaryDirectory(prefix="tminus-my-") as d:
        path = Path(d) / "client.cnf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("[client]\n")
            if u.password:
                escaped = u.password.replace("\\", "\\\\").replace('"', '\\"')
                f.write(f'password="{escaped}"\n')
        args = [f"--defaults-extra-file={path}", f"--user={u.user}"]
        if u.socket:
            args.append(f"--socket={u.socket}")
        else:
            args += [f"--host={u.host}", f"--port={u.port}"]
        yield args


def _state(conn: Any, db: str) -> tuple[DbState, list[str]]:
    """Catalog, exact counts and checksums of schema ``db`` in ``conn``'s current snapshot;
    also the tables whose engine is not transactional."""
    tables: list[TableEntry] = []
    non_tx: list[str] = []
    rels = _rows(
        conn,
        "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        (db,),
    )
    cols: dict[str, list[str]] = {}
    for t, col in _rows(
        conn,
        "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, ORDINAL_POSITION",
        (db,),
    ):
        cols.setdefault(t, []).append(col)
    for name, engine in rels:
        if str(engine or "").lower() not in ("innodb", "xtradb", "rocksdb", "ndbcluster"):
            non_tx.append(name)
        row_expr = ", ".join(f"QUOTE({_q(c)})" for c in cols[name])
        (count, s1, s2) = _rows(
            conn,
            "SELECT COUNT(*),"
            " COALESCE(SUM(CAST(CONV(SUBSTRING(h, 1, 16), 16, 10) AS UNSIGNED)), 0),"
            " COALESCE(SUM(CAST(CONV(SUBSTRING(h, 17, 16), 16, 10) AS UNSIGNED)), 0)"
            f" FROM (SELECT MD5(CONCAT_WS(',', {row_expr})) AS h FROM {_q(db)}.{_q(name)}) x",
        )[0]
        digest = hashlib.md5(f"{int(s1)}:{int(s2)}".encode()).hexdigest()
        tables.append(TableEntry(name, int(count), digest))
    indexes: dict[tuple[str, str], list[str]] = {}
    unique: dict[tuple[str, str], str] = {}
    for t, idx, non_unique, col, sub, itype in _rows(
        conn,
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, INDEX_TYPE "
        "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
        "ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
        (db,),
    ):
        indexes.setdefault((t, idx), []).append(f"{col}({sub})" if sub else str(col))
        unique[(t, idx)] = f"{'' if int(non_unique) else 'UNIQUE '}{itype}"
    index_objs = [
        SchemaObject(idx, t, f"{unique[(t, idx)]} ({', '.join(c)})")
        for (t, idx), c in sorted(indexes.items())
    ]
    cons: dict[tuple[str, str], list[str]] = {}
    for t, name, ctype in _rows(
        conn,
        "SELECT TABLE_NAME, CONSTRAINT_NAME, CONSTRAINT_TYPE "
        "FROM information_schema.TABLE_CONSTRAINTS WHERE TABLE_SCHEMA = %s",
        (db,),
    ):
        cons[(t, name)] = [str(ctype)]
    for t, name, col, rt, rc in _rows(
        conn,
        "SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_NAME, "
        "REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION",
        (db,),
    ):
        cons.setdefault((t, name), ["KEY"]).append(f"{col}" + (f"->{rt}.{rc}" if rt else ""))
    try:  # MariaDB; MySQL 8 has no TABLE_NAME here (TABLE_CONSTRAINTS still lists them)
        checks = _rows(
            conn,
            "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE "
            "FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s",
            (db,),
        )
    except pymysql.MySQLError:
        checks = []
    for t, name, clause in checks:
        cons.setdefault((t, name), ["CHECK"]).append(str(clause))
    constraint_objs = [
        SchemaObject(name, t, " ".join(parts)) for (t, name), parts in sorted(cons.items())
    ]
    sequences: list[SequenceEntry] = []
    for t, col, auto in _rows(
        conn,
        "SELECT c.TABLE_NAME, c.COLUMN_NAME, t.AUTO_INCREMENT FROM information_schema.COLUMNS c "
        "JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA "
        "AND t.TABLE_NAME = c.TABLE_NAME WHERE c.TABLE_SCHEMA = %s "
        "AND c.EXTRA LIKE '%%auto_increment%%' ORDER BY 1",
        (db,),
    ):
        m = _rows(conn, f"SELECT MAX({_q(col)}) FROM {_q(db)}.{_q(t)}")[0][0]
        sequences.append(
            SequenceEntry(
                f"{t}.auto_increment",
                t,
                col,
                None if auto is None else int(auto) - 1,
                None if m is None else int(m),
            )
        )
    return DbState(tables, index_objs, constraint_objs, sequences), non_tx


def _session(conn: Any) -> None:
    with conn.cursor() as cur:
        try:  # MySQL 8 caches information_schema.TABLES (AUTO_INCREMENT) for a day
            cur.execute("SET SESSION information_schema_stats_expiry = 0")
        except pymysql.MySQLError:
            pass


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
                    state, non_tx, result = self._dump(conn, argv, bdir.work / DUMP_FILE)
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

    def _dump(
        self, conn: Any, argv: list[str], out: Path
    ) -> tuple[DbState, list[str], tuple[int, str, bool, set[str]]]:
        """Take the locked snapshot handshake, run the dump into ``out`` and compute the state
        in our snapshot meanwhile. Returns the state, non-transactional tables and (exit status,
        stderr, completed marker seen, tables with data)."""
        db = argv[-1]
        with conn.cursor() as cur:
            cur.execute("SET SESSION lock_wait_timeout = 30")
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            try:
                cur.execute("FLUSH TABLES WITH READ LOCK")
            except pymysql.MySQLError as exc:
                raise BackupError(
                    f"cannot block writes for the consistent snapshot "
                    f"(FLUSH TABLES WITH READ LOCK): {exc}",
                    hint="grant the RELOAD privilege to the backup user",
                ) from None
        proc: subprocess.Popen[bytes] | None = None
        started = threading.Event()
        err_lines: list[str] = []
        box: dict[str, Any] = {"completed": False, "dumped": set(), "error": None}

        def read_err(stream: IO[bytes]) -> None:
            after_start = False
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                err_lines.append(line)
                if after_start or "Retrieving table structure" in line:
                    started.set()
                if "-- Starting transaction" in line:
                    after_start = True
            started.set()

        def copy_out(stream: IO[bytes]) -> None:
            try:
                last = b""
                with gzip.open(out, "wb", compresslevel=6) as gz:
                    for line in stream:
                        gz.write(line)
                        if line.startswith(_DATA_MARK):
                            box["dumped"].add(line[len(_DATA_MARK) :].rstrip(b"`\r\n").decode())
                        if line.strip():
                            last = line
                box["completed"] = last.startswith(_COMPLETED)
            except BaseException as exc:  # surfaced by the caller
                box["error"] = exc
                for _ in stream:  # keep draining so the tool cannot block
                    pass

        threads: list[threading.Thread] = []
        try:
            with conn.cursor() as cur:
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            proc = work.popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert proc.stdout is not None and proc.stderr is not None
            threads = [
                threading.Thread(target=read_err, args=(proc.stderr,), daemon=True),
                threading.Thread(target=copy_out, args=(proc.stdout,), daemon=True),
            ]
            for t in threads:
                t.start()
            if not started.wait(_HANDSHAKE_TIMEOUT):
                raise BackupError(
                    f"the dump tool did not start its transaction within {_HANDSHAKE_TIMEOUT:g}s"
                )
        except BaseException:
            if proc is not None:
                kill_tool(proc)
            raise
        finally:
            with conn.cursor() as cur:
                cur.execute("UNLOCK TABLES")  # our snapshot and the dump's are now taken
        assert proc is not None
        try:
            state, non_tx = _state(conn, db)
            with conn.cursor() as cur:
                cur.execute("COMMIT")
        except BaseException:
            kill_tool(proc)
            raise
        finally:
            rc = proc.wait()
            for t in threads:
                t.join()
        if box["error"] is not None:
            raise BackupError(f"cannot write the dump: {box['error']}")
        return state, non_tx, (rc, "\n".join(err_lines), box["completed"], box["dumped"])

    # ------------------------------------------------------------------ restore
    def _load(self, manifest: Manifest, backup_dir: Path, u: MysqlUrl, db: str) -> None:
        """Pipe the dump into the client connected to schema ``db``; check its exit status."""
        with _defaults_file(u) as opts:
            argv = [
                self._client(), *opts, "--batch", "--default-character-set=utf8mb4", db,
            ]  # fmt: skip
            with tempfile.TemporaryFile() as errf:
                proc = work.popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errf
                )
                assert proc.stdin is not None
                broken = False
                try:
                    with gzip.open(backup_dir / DUMP_FILE, "rb") as gz:
                        shutil.copyfileobj(gz, proc.stdin, 1 << 20)
                except BrokenPipeError:
                    broken = True
                except (OSError, EOFError) as exc:
                    kill_tool(proc)
                    raise BackupError(f"cannot read {DUMP_FILE}: {exc}") from None
                finally:
                    try:
                        proc.stdin.close()
                    except BrokenPipeError:
                        broken = True
                rc = proc.wait()
                errf.seek(0)
                err = errf.read().decode("utf-8", "replace")
        if rc != 0 or broken:
            raise BackupError(
                mask(f"{Path(argv[0]).name} failed (exit {rc}) loading the dump: {tail(err)}",
                     [u.password])
            )  # fmt: skip

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
            self._load(manifest, Path(backup_dir), u, u.database)
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
            self._load(manifest, Path(backup_dir), u, name)
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
