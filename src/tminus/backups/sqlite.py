"""SQLite backups with the online backup API (``sqlite3.Connection.backup``), never a file copy.

Backup: the API copies every page of the live database into ``database.sqlite3`` under a read
lock (in WAL mode writers go on; the copy is a consistent snapshot, and it restarts by itself
if another process writes during it). ``PRAGMA integrity_check`` must say ``ok`` on the copy,
and the manifest's counts and checksums are computed **from the copy**, which is itself a
consistent snapshot, so the manifest describes exactly what was backed up.

Checksum of a table: ``md5(repr(row))`` per row, the two 64-bit halves summed over all rows,
the md5 of both sums (order-independent, constant memory). ``sqlite_sequence`` (AUTOINCREMENT)
values are recorded as sequences and must stay ``>= max(rowid)``.

Restore: files checked first, then the backup API copies the backup file onto the target (one
transaction: other connections see the old or the new database, never a mix), then the target
is compared with the manifest. Verify: the backup API into a temporary file, compare, delete.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy.engine import make_url

from tminus.backups.backup_dir import BackupDir
from tminus.backups.base import (
    BackupError,
    Manifest,
    SchemaObject,
    SequenceEntry,
    TableEntry,
    VerifyReport,
    require_intact,
)
from tminus.backups.compare import DbState, diff_state, intact_report, require_match
from tminus.files import open_private

__all__ = ["SqliteDriver", "sqlite_path"]

DB_FILE = "database.sqlite3"


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or a plain path."""
    if "://" not in url:
        return Path(url)
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        raise BackupError(f"not a file-backed sqlite URL: {url}")
    return Path(u.database)


def _open_ro(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise BackupError(f"sqlite database {path} does not exist")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _state(conn: sqlite3.Connection) -> DbState:
    conn.execute("BEGIN")  # one read transaction: one snapshot
    try:
        master = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
        tables: list[TableEntry] = []
        constraints: list[SchemaObject] = []
        indexes: list[SchemaObject] = []
        for typ, name, tbl, sql in master:
            if typ == "index":
                indexes.append(SchemaObject(name, tbl, sql or "(automatic)"))
            if typ != "table" or name.startswith("sqlite_"):
                continue
            count, s1, s2 = 0, 0, 0
            for row in conn.execute(f"SELECT * FROM {_q(name)}"):
                h = hashlib.md5(repr(tuple(row)).encode()).hexdigest()
                count += 1
                s1 += int(h[:16], 16)
                s2 += int(h[16:], 16)
            digest = hashlib.md5(f"{s1}:{s2}".encode()).hexdigest()
            tables.append(TableEntry(name, count, digest))
            constraints.append(SchemaObject(f"{name}:definition", name, sql or ""))
            for fk in conn.execute(f"PRAGMA foreign_key_list({_q(name)})"):
                constraints.append(
                    SchemaObject(f"fk{fk[0]}.{fk[1]}", name, f"({fk[3]}) -> {fk[2]}({fk[4]})")
                )
        sequences: list[SequenceEntry] = []
        has_seq = any(n == "sqlite_sequence" for _, n, _, _ in master)
        if has_seq:
            for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name"):
                m = conn.execute(f"SELECT max(rowid) FROM {_q(name)}").fetchone()
                sequences.append(
                    SequenceEntry(
                        f"{name}.autoincrement",
                        name,
                        "rowid",
                        int(seq),
                        None if m is None or m[0] is None else int(m[0]),
                    )
                )
    finally:
        conn.execute("COMMIT")
    return DbState(tables, indexes, constraints, sequences)


def _integrity(conn: sqlite3.Connection, what: str) -> None:
    result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    if result != ["ok"]:
        raise BackupError(f"{what} fails PRAGMA integrity_check: {'; '.join(result[:5])}")


def _copy(src: Path, dest: Path, *, journal_mode: str | None = "delete") -> None:
    """Backup API from ``src`` (read-only) onto ``dest`` (created or replaced page by page).

    The copy carries the source's journal mode in its header; ``journal_mode`` sets the
    destination's afterwards (``delete``: one self-contained file; None: the destination's own
    mode before the copy, for a restore onto a live database)."""
    try:
        with closing(_open_ro(src)) as s, closing(sqlite3.connect(dest)) as d:
            mode = journal_mode or str(d.execute("PRAGMA journal_mode").fetchone()[0])
            s.backup(d)
            d.execute(f"PRAGMA journal_mode = {mode}")
    except sqlite3.Error as exc:
        raise BackupError(f"sqlite backup from {src} to {dest} failed: {exc}") from None


class SqliteDriver:
    kind: ClassVar[str] = "sqlite"

    def backup(
        self, target_url: str, dest_dir: str | os.PathLike[str], *, jobs: int = 2
    ) -> Manifest:
        src = sqlite_path(target_url)
        with BackupDir(dest_dir, src.stem or "sqlite") as bdir:
            out = bdir.work / DB_FILE
            _copy(src, out)
            try:
                with closing(_open_ro(out)) as conn:
                    _integrity(conn, "the backup copy")
                    state = _state(conn)
            except sqlite3.Error as exc:
                raise BackupError(f"cannot read the backup copy: {exc}") from None
            if not state.tables:
                raise BackupError(
                    f"sqlite database {src} has no tables: nothing to back up "
                    "(an empty backup is refused)"
                )
            manifest = state.manifest(
                bdir,
                self.kind,
                str(target_url),
                f"python sqlite3 backup API (SQLite {sqlite3.sqlite_version})",
                f"SQLite {sqlite3.sqlite_version}",
                {"db_file": DB_FILE, "source_path": str(src.resolve())},
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
        require_intact(manifest, backup_dir, self.kind)
        target = sqlite_path(target_url)
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy(Path(backup_dir) / DB_FILE, target, journal_mode=None)
        require_match(self, manifest, target_url, target)

    def verify(
        self,
        manifest: Manifest,
        backup_dir: str | os.PathLike[str],
        server_url: str,
        *,
        scratch_name: str | None = None,
        keep_scratch: bool = False,
    ) -> VerifyReport:
        """``server_url`` is not used: the scratch copy is a temporary file (``scratch_name``
        names it, in the system's temporary directory, if given)."""
        report, intact = intact_report(manifest, backup_dir, self.kind)
        if not intact:
            return report
        if scratch_name:
            scratch = Path(tempfile.gettempdir()) / scratch_name
            if scratch.exists():
                raise BackupError(f"scratch file {scratch} already exists")
            os.close(open_private(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL))  # 0600
        else:
            fd, name = tempfile.mkstemp(prefix="tminus-verify-", suffix=".sqlite3")
            os.close(fd)
            scratch = Path(name)
        report.scratch = str(scratch)
        try:
            _copy(Path(backup_dir) / DB_FILE, scratch)
            with closing(_open_ro(scratch)) as conn:
                _integrity(conn, "the scratch copy")
            report.mismatches += self.compare(manifest, str(scratch))
            report.checked_tables = len(manifest.tables)
            report.checked_rows = sum(t.rows for t in manifest.tables)
        except (BackupError, sqlite3.Error) as exc:
            report.mismatches.append(str(exc))
        finally:
            if keep_scratch:
                report.scratch_kept = True
            else:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{scratch}{suffix}").unlink(missing_ok=True)
        return report

    def compare(self, manifest: Manifest, target_url: str) -> list[str]:
        try:
            with closing(_open_ro(sqlite_path(target_url))) as conn:
                state = _state(conn)
        except sqlite3.Error as exc:
            raise BackupError(f"cannot read {target_url}: {exc}") from None
        return diff_state(manifest, state)

    def snapshot(self, target_url: str) -> dict[str, Any]:
        with closing(_open_ro(sqlite_path(target_url))) as conn:
            conn.execute("BEGIN")
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
                )
            ]
            tables = {
                n: int(conn.execute(f"SELECT count(*) FROM {_q(n)}").fetchone()[0]) for n in names
            }
            indexes = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name"
                )
            ]
            conn.execute("COMMIT")
        return {
            "kind": self.kind,
            "target": target_url,
            "tables": tables,
            "indexes": indexes,
            "total_rows": sum(tables.values()),
        }

    def estimate_size(self, target_url: str) -> int:
        with closing(_open_ro(sqlite_path(target_url))) as conn:
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        return pages * size
