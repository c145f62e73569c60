"""Backups of a path target (a directory or a single file) as ``files.tar.gz``.

Backup: every regular file is streamed into the archive once, through a hash, so the sha256
in the manifest is the sha256 of the bytes in the archive; a file that shrinks, grows or is
modified while it is read is an error (the archive would hold a torn copy). Symlinks are kept
as links, empty directories as directories; other file types (sockets, devices) are refused.
The manifest's ``contents`` lists every entry (relative path, type, size, sha256, mode);
``files`` lists the archive itself. After writing, the archive is read back and must list
exactly ``contents``.

Restore: the archive's size and sha256 are checked first; it is extracted (with the ``data``
filter: no absolute paths, no ``..``, no devices) into a hidden sibling of the target, every
extracted file is checked against ``contents``, and only then the new tree replaces the target:
atomically with ``renameat2(RENAME_EXCHANGE)`` where Linux offers it, otherwise by two renames
(the target is missing for an instant). The old tree is deleted afterwards.

Verify: extract into a temporary directory and compare every file with ``contents``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any, ClassVar

from tminus.backups.backup_dir import BackupDir
from tminus.backups.base import (
    BackupError,
    FileEntry,
    Manifest,
    VerifyReport,
    require_intact,
    sha256_file,
)
from tminus.backups.compare import intact_report, require_match

__all__ = ["FilesDriver", "archive_problems", "member_problems"]

ARCHIVE = "files.tar.gz"
_EMPTY_SHA = hashlib.sha256(b"").hexdigest()


def _path(url: str) -> Path:
    return Path(url[len("file://") :] if url.startswith("file://") else url)


class _HashingReader:
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.h.update(data)
        self.n += len(data)
        return data


def _walk(root: Path) -> list[tuple[str, Path]]:
    """(archive name, path) for the target: a directory's entries relative to it, or a file
    under its own name."""
    if root.is_symlink() or root.is_file():
        return [(root.name, root)]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        d = Path(dirpath)
        for name in sorted(dirnames + filenames):
            p = d / name
            out.append((p.relative_to(root).as_posix(), p))
    return out


def _add(tar: tarfile.TarFile, name: str, p: Path) -> FileEntry:
    st = p.lstat()
    if stat.S_ISLNK(st.st_mode):
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(p)
        info.mtime = int(st.st_mtime)
        tar.addfile(info)
        return FileEntry(name, 0, _EMPTY_SHA, "symlink", None, info.linkname)
    if stat.S_ISDIR(st.st_mode):
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)
        tar.addfile(info)
        return FileEntry(name, 0, _EMPTY_SHA, "dir", info.mode)
    if not stat.S_ISREG(st.st_mode):
        raise BackupError(f"{p} is not a regular file, directory or symlink; refusing to guess")
    with open(p, "rb") as f:
        fst = os.fstat(f.fileno())
        info = tarfile.TarInfo(name)
        info.size = fst.st_size
        info.mode = stat.S_IMODE(fst.st_mode)
        info.mtime = int(fst.st_mtime)
        reader = _HashingReader(f)
        try:
            tar.addfile(info, reader)
        except OSError as exc:
            raise BackupError(f"{p} changed while being backed up: {exc}") from None
        extra = f.read(1)
        after = os.fstat(f.fileno())
    if extra or after.st_size != fst.st_size or after.st_mtime_ns != fst.st_mtime_ns:
        raise BackupError(f"{p} changed while being backed up; back it up when it is quiet")
    return FileEntry(name, reader.n, reader.h.hexdigest(), "file", info.mode)


def _extract(archive: Path, dest: Path) -> None:
    """Extract with the ``tar`` filter (no absolute paths, nothing outside ``dest``, no
    setuid bits) and refuse members other than files, directories and symlinks, or below a
    symlink member (which would write through the link). Symlink targets are kept as they
    are: a ``current -> /srv/app/releases/7`` link is normal in a deploy tree."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            problems = member_problems(members, dest)
            if problems:
                raise BackupError(f"cannot extract {archive.name}: " + "; ".join(problems))
            tar.extractall(dest, members=members, filter="tar")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"cannot extract {archive.name}: {exc}") from None


def member_problems(members: list[tarfile.TarInfo], dest: str | os.PathLike[str]) -> list[str]:
    """Why a restore would refuse these archive members (none: it extracts them): a member
    that is not a file, directory or symlink, one below a symlink member, or one the ``tar``
    extraction filter rejects for ``dest`` (a ``..`` or absolute path leading outside it).
    ``tminus backups verify`` applies the same checks without extracting."""
    out: list[str] = []
    links = {m.name for m in members if m.issym()}
    for m in members:
        if not (m.isfile() or m.isdir() or m.issym()):
            out.append(f"archive member {m.name} is not a file, dir or symlink")
            continue
        parts = m.name.split("/")
        if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            out.append(f"archive member {m.name} lies below a symlink")
            continue
        try:
            tarfile.tar_filter(m, os.fspath(dest))
        except tarfile.FilterError as exc:
            out.append(f"archive member {m.name}: {exc}")
    return out


def archive_problems(manifest: Manifest, backup_dir: str | os.PathLike[str]) -> list[str]:
    """The archive of a files backup, read without extracting: :func:`member_problems`
    (against a notional restore root), and its members must be exactly the manifest's
    ``contents`` (a restore compares what it extracted with them)."""
    archive = Path(backup_dir) / ARCHIVE
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        return [f"cannot read {ARCHIVE}: {exc}"]
    out = member_problems(members, "/nonexistent/tminus-restore-root")
    names = {m.name for m in members}
    listed = {c.path for c in manifest.contents}
    out += [f"archive member {n} is not in the manifest" for n in sorted(names - listed)]
    out += [f"{n}: in the manifest, not in the archive" for n in sorted(listed - names)]
    return out


def _compare_tree(contents: list[FileEntry], root: Path) -> list[str]:
    """Differences between a tree on disk and the manifest's contents."""
    out = []
    want = {c.path: c for c in contents}
    have: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            have[p.relative_to(root).as_posix()] = p
    for path in sorted(want.keys() - have.keys()):
        out.append(f"{path}: missing")
    for path in sorted(have.keys() - want.keys()):
        out.append(f"{path}: not in the manifest")
    for path in sorted(want.keys() & have.keys()):
        c, p = want[path], have[path]
        if c.type == "symlink":
            if not p.is_symlink() or os.readlink(p) != c.link:
                out.append(f"{path}: expected a symlink to {c.link}")
        elif c.type == "dir":
            if p.is_symlink() or not p.is_dir():
                out.append(f"{path}: expected a directory")
        elif p.is_symlink() or not p.is_file():
            out.append(f"{path}: expected a regular file")
        else:
            size = p.stat().st_size
            if size != c.size:
                out.append(f"{path}: {size} bytes, manifest says {c.size}")
                continue
            digest = sha256_file(p)
            if digest != c.sha256:
                out.append(f"{path}: sha256 {digest}, manifest says {c.sha256}")
    return out


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return bool(rc == 0)


class FilesDriver:
    kind: ClassVar[str] = "files"

    def backup(
        self, target_url: str, dest_dir: str | os.PathLike[str], *, jobs: int = 2
    ) -> Manifest:
        root = _path(target_url)
        if not root.exists() and not root.is_symlink():
            raise BackupError(f"path {root} does not exist")
        is_dir = root.is_dir() and not root.is_symlink()
        with BackupDir(dest_dir, root.name or "files") as bdir:
            archive = bdir.work / ARCHIVE
            contents = []
            with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
                for name, p in _walk(root):
                    contents.append(_add(tar, name, p))
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    listed = {m.name: m for m in tar.getmembers()}
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise BackupError(f"the archive cannot be read back: {exc}") from None
            if set(listed) != {c.path for c in contents}:
                raise BackupError("the archive does not list exactly the files backed up")
            if not any(c.type == "file" for c in contents):
                raise BackupError(
                    f"{root} holds no files: nothing to back up (an empty backup is refused)"
                )
            manifest = Manifest(
                id=bdir.id,
                kind=self.kind,
                target=str(root),
                created_at=bdir.created_at,
                tool_version=f"python tarfile (gzip), format {tarfile.DEFAULT_FORMAT}",
                server_version="",
                files=[],
                contents=contents,
                details={
                    "archive": ARCHIVE,
                    "path_type": "dir" if is_dir else "file",
                    "root_mode": stat.S_IMODE(root.lstat().st_mode),
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
        require_intact(manifest, backup_dir, self.kind)
        target = _path(target_url)
        parent = target.parent
        parent.mkdir(parents=True, exist_ok=True)
        work = parent / f".{target.name}.tminus-restore-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        root_mode = manifest.details.get("root_mode")
        if isinstance(root_mode, int) and manifest.details.get("path_type") == "dir":
            work.chmod(root_mode)
        leftover: Path | None = work  # what to delete afterwards
        try:
            _extract(Path(backup_dir) / ARCHIVE, work)
            problems = _compare_tree(manifest.contents, work)
            if problems:
                raise BackupError(
                    f"extracted backup {manifest.id} differs from its manifest: "
                    + "; ".join(problems)
                )
            if manifest.details.get("path_type") == "file":
                (entry,) = manifest.contents
                os.replace(work / entry.path, target)  # atomic for a single file
            elif not target.exists() and not target.is_symlink():
                os.rename(work, target)
                leftover = None
            elif target.is_dir() and not target.is_symlink() and _exchange(work, target):
                pass  # atomic swap: ``work`` now holds the old tree
            else:
                old = parent / f".{target.name}.tminus-old-{uuid.uuid4().hex[:8]}"
                os.rename(target, old)
                os.rename(work, target)
                leftover = old
        finally:
            if leftover is not None:
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                elif leftover.is_symlink() or leftover.exists():
                    leftover.unlink()
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
        """``server_url`` is not used: the archive is extracted into a temporary directory."""
        report, intact = intact_report(manifest, backup_dir, self.kind)
        if not intact:
            return report
        if scratch_name:
            scratch = Path(tempfile.gettempdir()) / scratch_name
            scratch.mkdir(mode=0o700)  # like mkdtemp's: the extracted copy is private
            scratch.chmod(0o700)
        else:
            scratch = Path(tempfile.mkdtemp(prefix="tminus-verify-"))
        report.scratch = str(scratch)
        try:
            _extract(Path(backup_dir) / ARCHIVE, scratch)
            report.mismatches += _compare_tree(manifest.contents, scratch)
            report.checked_files = sum(1 for c in manifest.contents if c.type == "file")
        except BackupError as exc:
            report.mismatches.append(str(exc))
        finally:
            if keep_scratch:
                report.scratch_kept = True
            else:
                shutil.rmtree(scratch, ignore_errors=True)
        return report

    def compare(self, manifest: Manifest, target_url: str) -> list[str]:
        target = _path(target_url)
        if manifest.details.get("path_type") == "file":
            (entry,) = manifest.contents
            if not target.is_file() or target.is_symlink():
                return [f"{target}: missing or not a regular file"]
            return _compare_file(entry, target)
        if not target.is_dir():
            return [f"{target}: missing or not a directory"]
        return _compare_tree(manifest.contents, target)

    def snapshot(self, target_url: str) -> dict[str, Any]:
        root = _path(target_url)
        files = dirs = size = 0
        for _, p in _walk(root):
            if p.is_symlink():
                continue
            if p.is_dir():
                dirs += 1
            elif p.is_file():
                files += 1
                size += p.stat().st_size
        return {
            "kind": self.kind,
            "target": str(root),
            "files": files,
            "dirs": dirs,
            "bytes": size,
        }

    def estimate_size(self, target_url: str) -> int:
        return int(self.snapshot(target_url)["bytes"])


def _compare_file(c: FileEntry, p: Path) -> list[str]:
    size = p.stat().st_size
    if size != c.size:
        return [f"{p}: {size} bytes, manifest says {c.size}"]
    digest = sha256_file(p)
    if digest != c.sha256:
        return [f"{p}: sha256 {digest}, manifest says {c.sha256}"]
    return []
