"""What every backup driver shares, and what the rest of tminus reads: the
:class:`BackupDriver` protocol, the :class:`Manifest` (its entries and fail-closed rules), the
:class:`VerifyReport`, which dump tools each kind needs (:func:`check_tools`), and the checks
of a backup's files against its manifest. This module is the family's leaf: it imports no other
module of :mod:`tminus.backups`. The drivers' shared helpers live in
:mod:`tminus.backups.tools` (running dump tools, masking secrets, database URLs),
:mod:`tminus.backups.backup_dir` (a backup being written: :class:`BackupDir`) and
:mod:`tminus.backups.compare` (a database's state against a manifest); the kind → driver
registry in :mod:`tminus.backups.registry`.

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

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tminus.errors import TminusError
from tminus.plan.interpolate import redact_url, url_password

__all__ = [
    "DATABASE_KINDS",
    "DRIVER_KINDS",
    "MANIFEST_NAME",
    "BackupDriver",
    "BackupError",
    "FileEntry",
    "Manifest",
    "SchemaObject",
    "SequenceEntry",
    "TableEntry",
    "TargetInspection",
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


# --------------------------------------------------------------------------- protocol


class TargetInspection(Protocol):
    """What a driver reads of a live target without a backup: its shape and size."""

    def compare(self, manifest: Manifest, target_url: str) -> list[str]:
        """Every difference between a live target and the manifest (empty when equal)."""
        ...

    def snapshot(self, target_url: str) -> dict[str, Any]:
        """Tables, indexes and exact row counts (or files and bytes) of a live target."""
        ...

    def estimate_size(self, target_url: str) -> int:
        """Bytes the target occupies now (a rough guide to the backup's size)."""
        ...


class BackupDriver(TargetInspection, Protocol):
    """One module per kind implements this (back up, restore, verify; plus the
    :class:`TargetInspection`); :func:`get_driver` returns an instance."""

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


# --------------------------------------------------------------------------- secrets


# ``url_password`` and ``redact_url`` live in ``tminus.plan.interpolate`` (re-exported here).


# --------------------------------------------------------------------------- files


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
