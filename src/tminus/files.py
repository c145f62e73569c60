"""Private by default: every file and directory tminus writes on the local machine is its
user's alone, whatever the umask.

* Directories tminus creates (the state directory, ``undo/``, ``progress/``, ``migrate/``,
  ``backups/``, each backup's directory and its ``.partial`` work directory, a verification's
  scratch directory) are made ``0700``; so are the missing parents of a path it creates.
* Files it writes (the SQLite store and its ``-wal``/``-shm``/``-journal``, lock files, the
  records of ``undo/``, ``progress/`` and ``migrate/``, every backup file and manifest) are
  ``0600``: opened with :func:`os.open` mode ``0600`` and ``fchmod``-ed, since the umask only
  ever removes bits (a umask of ``000`` would otherwise leave nothing to remove and an odd one
  such as ``0277`` would make a file tminus cannot write).

What tminus *names* it tightens when it finds it open to others (left by an older version):
a state directory called ``.tminus`` and its subdirectories above, its ``backups/``, the
SQLite store's files, and the backups in any backup directory it writes to (directories
holding a ``manifest.json``). A directory *you* named (the parent of a ``TMINUS_STATE``
SQLite file that is not called ``.tminus``, a backup step's ``dest``) is never
``chmod``-ed: ``tminus check`` and ``tminus run`` warn about it instead (:func:`exposure`),
since it may be shared on purpose (``/srv/backups`` read by a copy job).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import IO

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "STATE_DIR_NAME",
    "STATE_SUBDIRS",
    "default_state_url",
    "exposure",
    "open_private",
    "private_dir",
    "private_sqlite",
    "private_state_dir",
    "private_text",
    "tighten_dir",
    "tighten_file",
    "tighten_tree",
]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
#: A state directory with this name is tminus's own: it is tightened when found open.
STATE_DIR_NAME = ".tminus"
#: The subdirectories tminus makes in the state directory (tightened when found open).
STATE_SUBDIRS = ("backups", "undo", "progress", "migrate")


def default_state_url() -> str:
    """The state store: ``TMINUS_STATE`` (a URL or a SQLite path), else ``.tminus/state.db``.
    Here, not in :mod:`tminus.store`, so that naming it imports no database driver."""
    env = os.environ.get("TMINUS_STATE")
    if env:
        return env
    return "sqlite:///.tminus/state.db"


def tighten_dir(path: str | os.PathLike[str]) -> None:
    """``chmod 0700`` a directory that is open to its group or others. Not through a symlink,
    and not when tminus may not (another user's directory): :func:`exposure` reports it."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o077:
            os.chmod(path, PRIVATE_DIR)


def tighten_file(path: str | os.PathLike[str]) -> None:
    """``chmod 0600`` an existing regular file that is open to its group or others."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
            os.chmod(path, PRIVATE_FILE)


def private_dir(path: str | os.PathLike[str], *, tighten: bool = True) -> Path:
    """Make directory ``path`` and its missing parents with mode 0700 (whatever the umask).
    An existing ``path`` is tightened to 0700 when ``tighten`` (a directory tminus owns);
    existing parents are left as they are."""
    p = Path(path)
    missing: list[Path] = []
    q = p
    while not os.path.lexists(q):
        missing.append(q)
        if q.parent == q:
            break
        q = q.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, PRIVATE_DIR)
        except FileExistsError:  # made by a concurrent process (0700 too, if it is tminus)
            continue
        os.chmod(d, PRIVATE_DIR)  # the umask may have removed owner bits too
    if tighten and p not in missing:
        tighten_dir(p)
    return p


def open_private(
    path: str | os.PathLike[str], flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
) -> int:
    """``os.open`` with mode 0600, then ``fchmod`` 0600: a new file is private whatever the
    umask, and an existing one of ours (written by an older version) is tightened. Another
    user's file (a shared state file tminus may write) keeps the mode its owner gave it."""
    fd = os.open(path, flags | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        st = os.fstat(fd)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != PRIVATE_FILE:
            os.fchmod(fd, PRIVATE_FILE)
    except OSError:
        os.close(fd)
        raise
    return fd


def private_text(path: str | os.PathLike[str]) -> IO[str]:
    """A text file opened for writing (created or truncated), mode 0600."""
    return os.fdopen(open_private(path), "w", encoding="utf-8")


def tighten_tree(root: str | os.PathLike[str]) -> None:
    """Every directory under ``root`` (and ``root``) 0700, every regular file 0600; symlinks
    are not followed. For what tminus wrote itself (a backup before it is committed)."""
    os.chmod(root, PRIVATE_DIR)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, PRIVATE_DIR)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, PRIVATE_FILE)


def private_state_dir(state_dir: str | os.PathLike[str]) -> Path:
    """The state directory, made (0700) if missing. One called ``.tminus`` is tminus's own:
    it and its subdirectories (:data:`STATE_SUBDIRS`) are tightened if found open. Another
    (the parent of a ``TMINUS_STATE`` file) is left as it is: :func:`exposure` warns."""
    d = Path(state_dir)
    owned = d.resolve().name == STATE_DIR_NAME
    private_dir(d, tighten=owned)
    if owned:
        for sub in STATE_SUBDIRS:
            tighten_dir(d / sub)
    return d


def private_sqlite(path: str | os.PathLike[str]) -> None:
    """Before SQLite opens ``path``: its directory as :func:`private_state_dir`, the database
    file created (empty: SQLite makes it a database) or tightened to 0600, and the files beside
    it (``-wal``, ``-shm``, ``-journal``, ``.lock``) tightened. SQLite gives the ``-wal``,
    ``-shm`` and ``-journal`` files it creates the database file's mode, so they are 0600
    too."""
    p = Path(path)
    private_state_dir(p.parent)
    # Never open (and close) an existing database file: closing any descriptor of a file
    # drops every POSIX lock this process holds on it, so a Store already open on it in this
    # process would lose its SQLite locks (and a concurrent writer could corrupt it).
    try:
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        tighten_file(p)
    else:
        try:
            os.fchmod(fd, PRIVATE_FILE)
        finally:
            os.close(fd)
    for suffix in ("-wal", "-shm", "-journal", ".lock"):
        tighten_file(f"{p}{suffix}")


def exposure(path: str | os.PathLike[str], what: str, fix: str = "") -> str | None:
    """A warning when directory ``path`` exists and its group or other users may enter or
    read it; None when it is private or absent. ``fix``: what to do (default ``chmod 700``)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode) or not mode & 0o077:
        return None
    who = " and ".join(
        w for w, bits in (("its group", 0o070), ("other users", 0o007)) if mode & bits
    )
    return (
        f"{what} {path} is open to {who} (mode {mode:04o}): the files tminus writes in it are "
        f"0600, but their names show, and files older versions wrote may be readable; "
        + (fix or f"chmod 700 {path}")
    )
