"""Local file trees sent to hosts: a manifest of sha256 checksums and a tar stream.

The fleet steps (``upload``, ``release``) scan the local tree once per step, build the tar
stream once (or once per distinct set of changed files) and write the same bytes to every
host's stdin, so the Python work is O(files) per step, not per host. The manifest travels
inside the tar as ``.tminus-sha256`` (``sha256sum -c`` format) and is checked on the host
before anything is moved into place.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MANIFEST", "LocalTree", "TreeFile", "file_tree", "scan_tree"]

#: Name of the manifest member inside the tar stream.
MANIFEST = ".tminus-sha256"


@dataclass(frozen=True)
class TreeFile:
    rel: str  # POSIX path relative to the tree's root
    path: Path
    sha256: str
    mode: int
    size: int


@dataclass
class LocalTree:
    """Regular files (with checksums), directories and symbolic links under ``root``."""

    root: Path
    files: list[TreeFile] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (rel, target)
    _tars: dict[frozenset[str] | None, bytes] = field(default_factory=dict, repr=False)
    _manifest: bytes | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def manifest(self, rels: Iterable[str] | None = None) -> str:
        """``sha256sum -c`` input: ``HASH  ./REL`` per file (all, or only ``rels``)."""
        only = None if rels is None else set(rels)
        return "".join(
            f"{f.sha256}  ./{f.rel}\n" for f in self.files if only is None or f.rel in only
        )

    def manifest_bytes(self) -> bytes:
        """The whole manifest, encoded once."""
        if self._manifest is None:
            self._manifest = self.manifest().encode()
        return self._manifest

    def digest(self) -> str:
        """One checksum of the whole tree: contents, names, modes and links."""
        h = hashlib.sha256(self.manifest().encode())
        for f in self.files:
            h.update(f"{f.rel}\0{f.mode:o}\n".encode())
        for rel, target in self.links:
            h.update(f"link {rel}\0{target}\n".encode())
        return h.hexdigest()

    def tar_dirs(self, rels: Iterable[str] | None = None) -> list[str]:
        """The directories :meth:`tar` puts in the stream for the same ``rels``, sorted."""
        key = None if rels is None else frozenset(rels)
        if key is not None and len(key) == len(self.files):
            key = None
        if key is None:
            return sorted(self.dirs)
        return sorted(_parents(f.rel for f in self.files if f.rel in key))

    def tar(self, rels: Iterable[str] | None = None, *, mode: int | None = None) -> bytes:
        """A tar stream of the files (all, or only ``rels``), their directories, the links
        (with all files only) and the manifest. Cached per set of files."""
        key = None if rels is None else frozenset(rels)
        if key is not None and len(key) == len(self.files):
            key = None
        cached = self._tars.get(key)
        if cached is not None:
            return cached
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            wanted = [f for f in self.files if key is None or f.rel in key]
            dirs = set(self.dirs) if key is None else _parents(f.rel for f in wanted)
            for d in sorted(dirs):
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = (
                    0o755 if key is not None else stat.S_IMODE((self.root / d).stat().st_mode)
                )
                tar.addfile(_anonymous(info))
            for f in wanted:
                info = tarfile.TarInfo(f.rel)
                info.size = f.size
                info.mode = mode if mode is not None else f.mode
                info.mtime = int(f.path.stat().st_mtime)
                with f.path.open("rb") as fh:
                    tar.addfile(_anonymous(info), fh)
            if key is None:
                for rel, target in self.links:
                    info = tarfile.TarInfo(rel)
                    info.type = tarfile.SYMTYPE
                    info.linkname = target
                    info.mode = 0o777
                    tar.addfile(_anonymous(info))
            data = self.manifest(None if key is None else key).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(_anonymous(info), io.BytesIO(data))
        out = buf.getvalue()
        self._tars[key] = out
        return out


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _parents(rels: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for rel in rels:
        parts = rel.split("/")[:-1]
        for k in range(1, len(parts) + 1):
            out.add("/".join(parts[:k]))
    return out


def _check_name(rel: str) -> None:
    if "\n" in rel or "\\" in rel:
        raise ValueError(f"file name {rel!r} has a newline or a backslash: not supported")


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def scan_tree(root: str | os.PathLike[str], *, keep_links: bool) -> LocalTree:
    """Scan a local directory. With ``keep_links`` symbolic links are kept as links (a
    release is a copy of the tree); otherwise links to files are followed and links to
    directories are not descended into (an upload copies contents). Raises ValueError or
    OSError."""
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"{root} is not a directory")
    tree = LocalTree(base)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        here = Path(dirpath)
        rel_dir = here.relative_to(base).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for d in list(dirnames):
            p = here / d
            if p.is_symlink():
                dirnames.remove(d)
                if keep_links:
                    _check_name(prefix + d)
                    tree.links.append((prefix + d, os.readlink(p)))
                continue
            _check_name(prefix + d)
            tree.dirs.append(prefix + d)
        for name in sorted(filenames):
            p = here / name
            rel = prefix + name
            _check_name(rel)
            if p.is_symlink() and keep_links:
                tree.links.append((rel, os.readlink(p)))
                continue
            st = p.stat()
            if not stat.S_ISREG(st.st_mode):
                continue  # sockets, fifos, devices, dangling links
            digest, size = _sha256(p)
            tree.files.append(TreeFile(rel, p, digest, stat.S_IMODE(st.st_mode), size))
    return tree


def file_tree(path: str | os.PathLike[str], rel: str) -> LocalTree:
    """A tree of one local file, named ``rel`` on the host."""
    p = Path(path)
    _check_name(rel)
    st = p.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file")
    digest, size = _sha256(p)
    return LocalTree(p.parent, files=[TreeFile(rel, p, digest, stat.S_IMODE(st.st_mode), size)])
