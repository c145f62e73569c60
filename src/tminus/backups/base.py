"""What every backup driver shares: the :class:`BackupDriver` protocol, the :class:`Manifest`,
the :class:`VerifyReport`, the registry and the fail-closed helpers.

A backup is a directory ``dest_dir/<backup-id>/`` holding the driver's files and
``manifest.json``. It is written under a hidden ``.<backup-id>.partial`` name and renamed into
place only after every check passed, so a directory with a manifest is a complete backup.

Fail closed: a non-zero exit of any tool, a missing, empty or short file, a file whose sha256
differs from the manifest, a manifest with 0 tables (databases) or 0 files (paths), or a
restored copy that differs from the manifest is a :class:`BackupError`, never a warning.
Passwords are passed to tools through the environment or a 0600 defaults file (never argv),
are removed from the URL stored in a manifest and are masked in every error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from tminus import work
from tminus.errors import TminusError
from tminus.files import (
    PRIVATE_DIR,
    STATE_DIR_NAME,
    private_dir,
    private_text,
    tighten_dir,
    tighten_tree,
)
from tminus.plan.interpolate import redact_url, url_password

__all__ = [
    "DATABASE_KINDS",
    "DRIVER_KINDS",
    "MANIFEST_NAME",
    "BackupDriver",
    "BackupError",
    "DbState",
    "FileEntry",
    "Manifest",
    "SchemaObject",
    "SequenceEntry",
    "TableEntry",
    "VerifyReport",
    "check_files",
    "check_tools",
    "redact_url",
    "sha256_file",
    "url_password",
]

MANIFEST_NAME = "manifest.json"
#: 2: the PostgreSQL driver records its checksum algorithm in ``details.checksum``; a format 1
#: manifest (no such key) used the md5 algorithm, which is still computed to verify it.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
#: Kinds with tables (the others: ``files``).
DATABASE_KINDS = ("postgres", "mysql", "mariadb", "sqlite")
DRIVER_KINDS = (*DATABASE_KINDS, "files")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class BackupError(TminusError):
    """A backup, restore or verification that did not succeed; the message says why."""


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class FileEntry:
    """A file of the backup (``files``) or of a backed-up path (``contents``).

    ``type`` is ``file``, ``dir`` or ``symlink``; ``link`` is a symlink's target.
    """

    path: str
    size: int
    sha256: str
    type: str = "file"
    mode: int | None = None
    link: str | None = None


@dataclass(frozen=True)
class TableEntry:
    """A table: exact row count and an order-independent checksum of all its rows."""

    name: str
    rows: int
    checksum: str


@dataclass(frozen=True)
class SchemaObject:
    """An index or a constraint, with the server's own definition of it."""

    name: str
    table: str
    definition: str


@dataclass(frozen=True)
class SequenceEntry:
    """A sequence (or an auto-increment counter) and the largest value of the column it feeds.

    After a restore ``last_value >= max_value`` must hold, or new rows would collide.
    """

    name: str
    table: str | None
    column: str | None
    last_value: int | None
    max_value: int | None


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Manifest:
    """Everything known about one backup; written as ``manifest.json`` next to its files."""

    id: str
    kind: str
    target: str
    created_at: str
    tool_version: str
    server_version: str
    files: list[FileEntry]
    tables: list[TableEntry] = field(default_factory=list)
    indexes: list[SchemaObject] = field(default_factory=list)
    constraints: list[SchemaObject] = field(default_factory=list)
    sequences: list[SequenceEntry] = field(default_factory=list)
    contents: list[FileEntry] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def compute_totals(self) -> None:
        self.totals = {
            "files": len(self.files),
            "bytes": sum(f.size for f in self.files),
            "tables": len(self.tables),
            "rows": sum(t.rows for t in self.tables),
            "indexes": len(self.indexes),
            "constraints": len(self.constraints),
            "sequences": len(self.sequences),
            "contents": len(self.contents),
            "content_bytes": sum(f.size for f in self.contents),
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse and check the structure; a malformed manifest is a :class:`BackupError`."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise BackupError(f"manifest is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise BackupError("manifest is not a JSON object")
        try:
            if raw.get("format") not in READABLE_FORMATS:
                raise BackupError(
                    f"unsupported manifest format {raw.get('format')!r}",
                    hint="written by a newer tminus; verify it with that version",
                )
            return cls(
                id=str(raw["id"]),
                kind=str(raw["kind"]),
                target=str(raw["target"]),
                created_at=str(raw["created_at"]),
                tool_version=str(raw["tool_version"]),
                server_version=str(raw["server_version"]),
                files=[FileEntry(**f) for f in raw["files"]],
                tables=[TableEntry(**t) for t in raw.get("tables", [])],
                indexes=[SchemaObject(**i) for i in raw.get("indexes", [])],
                constraints=[SchemaObject(**c) for c in raw.get("constraints", [])],
                sequences=[SequenceEntry(**s) for s in raw.get("sequences", [])],
                contents=[FileEntry(**f) for f in raw.get("contents", [])],
                totals={str(k): int(v) for k, v in raw.get("totals", {}).items()},
                details=dict(raw.get("details", {})),
                format=int(raw["format"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupError(f"manifest is malformed: {type(exc).__name__}: {exc}") from None

    @classmethod
    def load(cls, backup_dir: str | os.PathLike[str]) -> Manifest:
        path = Path(backup_dir) / MANIFEST_NAME
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None
        return cls.from_json(text)


def validate_manifest(manifest: Manifest, kind: str) -> None:
    """The fail-closed rules a manifest must meet before it is written or trusted."""
    problems: list[str] = []
    want = "mysql" if kind == "mariadb" else kind
    have = "mysql" if manifest.kind == "mariadb" else manifest.kind
    if have != want:
        problems.append(f"manifest is for kind {manifest.kind!r}, not {kind!r}")
    if not manifest.files:
        problems.append("manifest lists 0 backup files")
    for f in manifest.files:
        if f.size <= 0:
            problems.append(f"backup file {f.path} is empty")
        if not _HEX64.match(f.sha256):
            problems.append(f"backup file {f.path} has no valid sha256")
        if f.path.startswith("/") or ".." in Path(f.path).parts or f.path == MANIFEST_NAME:
            problems.append(f"backup file path {f.path!r} is not allowed")
    if want in DATABASE_KINDS and not manifest.tables:
        problems.append("manifest lists 0 tables (nothing would be checked)")
    if want == "files" and not [c for c in manifest.contents if c.type == "file"]:
        problems.append("manifest lists 0 files (nothing would be checked)")
    for t in manifest.tables:
        if t.rows < 0 or not t.checksum:
            problems.append(f"table {t.name} has no valid row count or checksum")
    if problems:
        raise BackupError(f"backup {manifest.id or '?'} is not usable: " + "; ".join(problems))


# --------------------------------------------------------------------------- reports


@dataclass
class VerifyReport:
    """The result of :meth:`BackupDriver.verify`. ``ok`` only if something was checked and
    nothing differed."""

    backup_id: str
    kind: str
    mismatches: list[str] = field(default_factory=list)
    checked_tables: int = 0
    checked_rows: int = 0
    checked_files: int = 0
    scratch: str | None = None
    scratch_kept: bool = False

    @property
    def ok(self) -> bool:
        return not self.mismatches and (self.checked_tables > 0 or self.checked_files > 0)

    def summary(self) -> str:
        what = (
            f"{self.checked_tables} tables, {self.checked_rows} rows"
            if self.kind != "files"
            else f"{self.checked_files} files"
        )
        if self.ok:
            return f"backup {self.backup_id} verified: {what} match the manifest"
        lines = [f"backup {self.backup_id} FAILED verification ({what} checked):"]
        lines += [f"  - {m}" for m in self.mismatches or ["nothing was checked"]]
        return "\n".join(lines)


@dataclass
class DbState:
    """What a database holds now, in the manifest's terms."""

    tables: list[TableEntry]
    indexes: list[SchemaObject]
    constraints: list[SchemaObject]
    sequences: list[SequenceEntry]

    def manifest(
        self,
        bdir: BackupDir,
        kind: str,
        target: str,
        tool_version: str,
        server_version: str,
        details: dict[str, Any],
    ) -> Manifest:
        """The manifest of a database backup of this state, written into ``bdir``."""
        return Manifest(
            id=bdir.id,
            kind=kind,
            target=target,
            created_at=bdir.created_at,
            tool_version=tool_version,
            server_version=server_version,
            files=[],
            tables=self.tables,
            indexes=self.indexes,
            constraints=self.constraints,
            sequences=self.sequences,
            details=details,
        )


def diff_state(manifest: Manifest, state: DbState) -> list[str]:
    """Every difference between a manifest and a database's state (empty when equal)."""
    out: list[str] = []
    if not manifest.tables:
        out.append("0 tables checked: the manifest lists no tables")
    want = {t.name: t for t in manifest.tables}
    have = {t.name: t for t in state.tables}
    for name in sorted(want.keys() - have.keys()):
        out.append(f"table {name} is missing")
    for name in sorted(have.keys() - want.keys()):
        out.append(f"table {name} is not in the manifest")
    for name in sorted(want.keys() & have.keys()):
        w, h = want[name], have[name]
        if w.rows != h.rows:
            out.append(f"table {name}: {h.rows} rows, manifest says {w.rows}")
        elif w.checksum != h.checksum:
            out.append(f"table {name}: checksum {h.checksum}, manifest says {w.checksum}")
    for label, ws, hs in (
        ("index", manifest.indexes, state.indexes),
        ("constraint", manifest.constraints, state.constraints),
    ):
        wm = {(o.table, o.name): o.definition for o in ws}
        hm = {(o.table, o.name): o.definition for o in hs}
        for key in sorted(wm.keys() - hm.keys()):
            out.append(f"{label} {key[1]} on {key[0]} is missing")
        for key in sorted(hm.keys() - wm.keys()):
            out.append(f"{label} {key[1]} on {key[0]} is not in the manifest")
        for key in sorted(wm.keys() & hm.keys()):
            if wm[key] != hm[key]:
                out.append(f"{label} {key[1]} on {key[0]}: {hm[key]!r}, manifest: {wm[key]!r}")
    wseq = {s.name: s for s in manifest.sequences}
    hseq = {s.name: s for s in state.sequences}
    for name in sorted(wseq.keys() - hseq.keys()):
        out.append(f"sequence {name} is missing")
    for name in sorted(hseq.keys() - wseq.keys()):
        out.append(f"sequence {name} is not in the manifest")
    for s in state.sequences:
        if s.max_value is not None and (s.last_value is None or s.last_value < s.max_value):
            out.append(
                f"sequence {s.name}: last value {s.last_value} is below max({s.column}) "
                f"= {s.max_value} in {s.table}; new rows would collide"
            )
    return out


# --------------------------------------------------------------------------- protocol


class BackupDriver(Protocol):
    """One module per kind implements this; :func:`get_driver` returns an instance."""

    kind: ClassVar[str]

    def backup(
        self, target_url: str, dest_dir: str | os.PathLike[str], *, jobs: int = 2
    ) -> Manifest:
        """Back up the target into a new ``dest_dir/<backup-id>/``, write and return its
        manifest. Raises :class:`BackupError` on any failure and leaves no backup behind."""
        ...

    def restore(
        self,
        manifest: Manifest,
        backup_dir: str | os.PathLike[str],
        target_url: str,
        *,
        jobs: int = 2,
    ) -> None:
        """Check every backup file (size, sha256) first and refuse a damaged backup without
        touching the target; restore; then compare the target with the manifest and raise
        if it differs."""
        ...

    def verify(
        self,
        manifest: Manifest,
        backup_dir: str | os.PathLike[str],
        server_url: str,
        *,
        scratch_name: str | None = None,
        keep_scratch: bool = False,
    ) -> VerifyReport:
        """Restore into a scratch copy (on ``server_url``'s server for postgres and mysql, a
        temporary file or directory otherwise), compare it with the manifest and drop it (also
        on failure, unless ``keep_scratch``). Every mismatch is listed in the report."""
        ...

    def compare(self, manifest: Manifest, target_url: str) -> list[str]:
        """Every difference between a live target and the manifest (empty when equal)."""
        ...

    def snapshot(self, target_url: str) -> dict[str, Any]:
        """Tables, indexes and exact row counts (or files and bytes) of a live target."""
        ...

    def estimate_size(self, target_url: str) -> int:
        """Bytes the target occupies now (a rough guide to the backup's size)."""
        ...


# --------------------------------------------------------------------------- tools

#: binary → Debian package that ships it.
DEBIAN_PACKAGES = {
    "pg_dump": "postgresql-client",
    "pg_restore": "postgresql-client",
    "mariadb-dump": "mariadb-client",
    "mysqldump": "mariadb-client",
    "mariadb": "mariadb-client",
    "mysql": "mariadb-client",
}

#: kind → groups of binaries; one binary of each group must be on PATH.
REQUIRED_TOOLS: dict[str, list[tuple[str, ...]]] = {
    "postgres": [("pg_dump",), ("pg_restore",)],
    "mysql": [("mariadb-dump", "mysqldump"), ("mariadb", "mysql")],
    "mariadb": [("mariadb-dump", "mysqldump"), ("mariadb", "mysql")],
    "sqlite": [],
    "files": [],
}


def find_tool(*names: str, path: str | None = None) -> str | None:
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def check_tools(kind: str, *, path: str | None = None) -> list[str]:
    """One message per missing binary, naming the Debian package to install (empty if all
    are there). ``path`` defaults to ``$PATH``."""
    if kind not in REQUIRED_TOOLS:
        raise BackupError(f"no backup driver for kind {kind!r}")
    out = []
    for group in REQUIRED_TOOLS[kind]:
        if find_tool(*group, path=path) is None:
            pkg = DEBIAN_PACKAGES[group[0]]
            names = " or ".join(group)
            out.append(
                f"{names} not found on PATH: install the Debian package {pkg} "
                f"(apt-get install {pkg})"
            )
    return out


def require_tools(kind: str) -> None:
    missing = check_tools(kind)
    if missing:
        raise BackupError("; ".join(missing))


def tool_version(binary: str) -> str:
    proc = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    if proc.returncode != 0:
        raise BackupError(f"{binary} --version exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str | None] = (),
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool (through :func:`tminus.work.popen`: a cancelled step kills it); a non-zero
    exit is a :class:`BackupError` with its stderr (masked)."""
    full_env = {**os.environ, **(env or {})}
    try:
        proc = work.popen(
            list(argv),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise BackupError(mask(f"{what} failed: {exc}", secrets)) from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        kill_tool(proc)
        raise BackupError(mask(f"{what} failed: {exc}", secrets)) from None
    except BaseException:
        kill_tool(proc)
        raise
    result = subprocess.CompletedProcess(
        list(argv), proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    )
    if result.returncode != 0:
        raise BackupError(
            mask(f"{what} failed (exit {result.returncode}): {tail(result.stderr)}", secrets)
        )
    return result


def kill_tool(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a tool started by :func:`tminus.work.popen` (its whole group), then reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.communicate(timeout=30)


def tail(text: str, limit: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


# --------------------------------------------------------------------------- secrets


# ``url_password`` and ``redact_url`` live in ``tminus.plan.interpolate`` (re-exported here).


def mask(text: str, secrets: Iterable[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
            quoted = quote(s, safe="")
            if quoted != s:
                text = text.replace(quoted, "***")
    return text


def replace_database(url: str, name: str) -> str:
    """The same server URL with another database name in its path."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(name), parts.query, parts.fragment))


def url_database(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


# --------------------------------------------------------------------------- files


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entries(root: Path) -> list[FileEntry]:
    """Every regular file under ``root`` (except the manifest), with size and sha256."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel == MANIFEST_NAME or p.is_dir():
            continue
        if p.is_symlink() or not p.is_file():
            raise BackupError(f"backup file {rel} is not a regular file")
        out.append(FileEntry(rel, p.stat().st_size, sha256_file(p)))
    return out


def check_files(manifest: Manifest, backup_dir: str | os.PathLike[str]) -> list[str]:
    """Every way the backup's files differ from its manifest: missing, size (truncated or
    grown), sha256, or files the manifest does not list."""
    root = Path(backup_dir)
    out: list[str] = []
    if not root.is_dir():
        return [f"backup directory {root} does not exist"]
    listed = set()
    for f in manifest.files:
        listed.add(f.path)
        p = root / f.path
        if not p.is_file():
            out.append(f"{f.path}: missing")
            continue
        size = p.stat().st_size
        if size != f.size:
            state = "truncated" if size < f.size else "has grown"
            out.append(f"{f.path}: {state}: expected {f.size} bytes, found {size}")
            continue
        digest = sha256_file(p)
        if digest != f.sha256:
            out.append(f"{f.path}: corrupted: sha256 expected {f.sha256}, actual {digest}")
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MANIFEST_NAME and rel not in listed:
            out.append(f"{rel}: not listed in the manifest")
    return out


def require_intact(manifest: Manifest, backup_dir: str | os.PathLike[str], kind: str) -> None:
    """Refuse a backup whose manifest or files are not exactly as written."""
    validate_manifest(manifest, kind)
    problems = check_files(manifest, backup_dir)
    if problems:
        raise BackupError(
            f"backup {manifest.id} in {backup_dir} is damaged; refusing to use it: "
            + "; ".join(problems),
            hint="use another backup; nothing was changed",
        )


def fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for d in [root, root.parent]:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _slug(label: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.")
    return s[:60] or "backup"


#: A partial directory nothing was written to for this long (and that no process holds
#: locked) is a crashed attempt's leftover.
STALE_PARTIAL_AGE_S = 60.0


def _newest_mtime(root: Path) -> float:
    newest = root.lstat().st_mtime
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest


def _lock_dir(path: Path) -> int | None:
    """An exclusive ``flock`` on directory ``path`` (its fd), or None when another process
    holds it. The lock lives as long as the fd: a crashed writer's lock is gone."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_stale_partials(dest: Path, slug: str, started: float) -> list[str]:
    """Remove the ``.<stamp>-<slug>[-N].partial`` directories of earlier, interrupted attempts
    at the same backup: only those no process holds locked (every writer holds its partial
    directory's lock until it commits or discards it) and nothing was written to for
    :data:`STALE_PARTIAL_AGE_S` before this attempt started. Returns their names."""
    pattern = re.compile(r"\.\d{8}T\d{6}Z-" + re.escape(slug) + r"(-\d+)?\.partial")
    removed: list[str] = []
    try:
        entries = sorted(dest.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not pattern.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            fd = _lock_dir(entry)
        except OSError:
            continue
        if fd is None:
            continue  # a live writer
        try:
            if _newest_mtime(entry) > started - STALE_PARTIAL_AGE_S:
                continue  # written to recently: maybe by a writer that does not lock
            shutil.rmtree(entry)
            removed.append(entry.name)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def _owned_backups(dest: Path) -> bool:
    """Is ``dest`` the ``backups/`` of a ``.tminus`` state directory (tminus's own)?"""
    d = dest.resolve()
    return d.name == "backups" and d.parent.name == STATE_DIR_NAME


def tighten_backups(dest: Path) -> None:
    """Tighten to 0700 the backups tminus wrote in ``dest`` (directories holding a manifest)
    that an older version left open to others: their files are then unreachable."""
    try:
        entries = list(dest.iterdir())
    except OSError:
        return
    for entry in entries:
        if (entry / MANIFEST_NAME).is_file() and not entry.is_symlink():
            tighten_dir(entry)


class BackupDir:
    """A backup being written: ``dest/.<id>.partial`` until :meth:`commit` renames it to
    ``dest/<id>``; :meth:`discard` removes it. Use as a context manager (discard on error).

    The partial directory is held locked (``flock``) while it is written. A partial directory
    of the same backup left by an interrupted attempt (a crash: unlocked, and not written to
    for a minute) is removed first; :attr:`removed` names them, and :meth:`commit` records
    them in the manifest's ``details["removed_partials"]``."""

    def __init__(self, dest_dir: str | os.PathLike[str], label: str) -> None:
        self.dest = Path(dest_dir)
        # Private (0700) when tminus makes it; one that exists is tightened only if it is the
        # state directory's `backups/` (a `dest` you named is warned about, never chmod-ed).
        private_dir(self.dest, tighten=_owned_backups(self.dest))
        tighten_backups(self.dest)
        self.removed = remove_stale_partials(self.dest, _slug(label), time.time())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = f"{stamp}-{_slug(label)}"
        self.id = base
        n = 1
        while (self.dest / self.id).exists() or (self.dest / f".{self.id}.partial").exists():
            n += 1
            self.id = f"{base}-{n}"
        self.work = self.dest / f".{self.id}.partial"
        self.work.mkdir(mode=PRIVATE_DIR)
        os.chmod(self.work, PRIVATE_DIR)  # whatever the umask: what is written inside is private
        self._lock = _lock_dir(self.work)
        self.final = self.dest / self.id
        self.created_at = _now_iso()

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> BackupDir:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self._unlock()

    def commit(self, manifest: Manifest) -> Manifest:
        """Fill in files and totals, check the fail-closed rules, write the manifest, fsync and
        rename into place."""
        manifest.files = file_entries(self.work)
        manifest.compute_totals()
        validate_manifest(manifest, manifest.kind)
        if self.removed:
            manifest.details["removed_partials"] = list(self.removed)
        tmp = self.work / (MANIFEST_NAME + ".tmp")
        with private_text(tmp) as fh:
            fh.write(manifest.to_json())
        os.replace(tmp, self.work / MANIFEST_NAME)
        tighten_tree(self.work)  # dump tools create their files 0644 & ~umask: now 0600
        fsync_tree(self.work)
        os.rename(self.work, self.final)
        self._unlock()
        return manifest


def scratch_suffix() -> str:
    return uuid.uuid4().hex[:10]


def require_match(driver: BackupDriver, manifest: Manifest, target_url: str, shown: object) -> None:
    """After a restore: the target must equal the manifest, or the restore fails."""
    problems = driver.compare(manifest, target_url)
    if problems:
        raise BackupError(
            f"restored {shown} differs from backup {manifest.id}: " + "; ".join(problems)
        )


def intact_report(
    manifest: Manifest, backup_dir: str | os.PathLike[str], kind: str
) -> tuple[VerifyReport, bool]:
    """The report a verify starts with, and whether the backup's files are intact (if not,
    the report already says why and there is nothing to restore)."""
    report = VerifyReport(manifest.id, kind)
    try:
        require_intact(manifest, backup_dir, kind)
    except BackupError as exc:
        report.mismatches.append(str(exc))
        return report, False
    return report, True
