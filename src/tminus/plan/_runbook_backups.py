"""Where a backup step's backup lands on disk, as the manual fallback names it: the backup
drivers' own layout (:mod:`tminus.backups`), which ``plan`` may not import (``plan`` imports
nothing else of tminus), so it is stated here once and held to the drivers by
``tests/runbook/test_runbook_fallback_paths.py``, which makes real backups with them.

A backup is the directory ``<dest>/<stamp>-<label>`` (``-2``, ``-3``… appended when two
backups of one label start within the same second), ``<stamp>`` the UTC start time as
``%Y%m%dT%H%M%SZ``, ``<label>`` made safe by :func:`slug`. The label is the database's name
in the target's URL (PostgreSQL: ``postgres`` if none; SQLite: the file's stem), or the
directory's name for a files backup. Inside: ``manifest.json`` and the dump, whose name
depends on the driver (:data:`DUMP_FILES`).
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

__all__ = [
    "DUMP_FILES",
    "MANIFEST",
    "STAMP",
    "STAMP_FORMAT",
    "database_label",
    "dir_name",
    "path_label",
    "slug",
]

#: ``datetime.strftime`` format of the stamp that starts a backup's directory name.
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
#: The stamp as the fallback prints it: take the newest directory that matches.
STAMP = "<YYYYMMDDTHHMMSSZ>"
#: The manifest every backup directory holds.
MANIFEST = "manifest.json"
#: The dump inside a backup directory, by driver kind (``dump`` is pg_dump's directory format).
DUMP_FILES = {
    "postgres": "dump",
    "mysql": "dump.sql.gz",
    "mariadb": "dump.sql.gz",
    "sqlite": "database.sqlite3",
    "files": "files.tar.gz",
}


def slug(label: str) -> str:
    """A label as it stands in a backup's directory name."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.")
    return s[:60] or "backup"


def dir_name(label: str, stamp: str = STAMP) -> str:
    """``<stamp>-<label>``: a backup's directory under its ``dest``."""
    return f"{stamp}-{slug(label)}"


def database_label(kind: str, url: str) -> str | None:
    """The label the driver of ``kind`` gives a backup of the database at ``url``; None when
    the URL is not written out (a secret, an unresolved reference) or names no database."""
    if "${" in url or "***" in url:
        return None
    if kind == "sqlite":
        path = url.split(":///", 1)[1] if "://" in url else url
        return PurePosixPath(path).stem or "sqlite"
    if "://" not in url:
        return None
    name = unquote(urlsplit(url).path.lstrip("/"))
    if kind == "postgres":
        return name or "postgres"
    return name or None


def path_label(path: str) -> str | None:
    """The label of a files backup of ``path`` (its last component); None when unresolved."""
    if "${" in path or "***" in path:
        return None
    return PurePosixPath(path.rstrip("/")).name or "files"
