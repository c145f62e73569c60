"""A backup being written (:class:`BackupDir`): a private, locked ``.<id>.partial`` directory,
renamed into place with its manifest only after every fail-closed check passed; leftovers of
crashed attempts are removed first, and older backups left open to others are tightened."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from tminus.backups.base import (
    MANIFEST_NAME,
    BackupError,
    FileEntry,
    Manifest,
    sha256_file,
    validate_manifest,
)
from tminus.files import (
    PRIVATE_DIR,
    STATE_DIR_NAME,
    private_dir,
    private_text,
    tighten_dir,
    tighten_tree,
)

__all__ = [
    "STALE_PARTIAL_AGE_S",
    "BackupDir",
    "file_entries",
    "fsync_tree",
    "remove_stale_partials",
    "tighten_backups",
]


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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

    def commit(self, manifest: Manifest, check: Callable[[], None] | None = None) -> Manifest:
        """Fill in files and totals, check the fail-closed rules, write the manifest, fsync and
        rename into place. ``check``, called once the files are hashed and before anything is
        written, may raise to abandon the backup (a driver's check that ran meanwhile)."""
        manifest.files = file_entries(self.work)
        if check is not None:
            check()
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
