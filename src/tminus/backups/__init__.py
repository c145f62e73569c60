"""Backups that fail closed: one driver per target kind behind :class:`BackupDriver`.

``get_driver(kind)`` returns the driver for ``postgres``, ``mysql``/``mariadb``, ``sqlite`` or
``files`` (a path target). See ``docs/backups.md``.
"""

from tminus.backups.base import (
    BackupDriver,
    BackupError,
    Manifest,
    VerifyReport,
    check_tools,
    redact_url,
    sha256_file,
)
from tminus.backups.registry import get_driver

__all__ = [
    "BackupDriver",
    "BackupError",
    "Manifest",
    "VerifyReport",
    "check_tools",
    "get_driver",
    "redact_url",
    "sha256_file",
]
