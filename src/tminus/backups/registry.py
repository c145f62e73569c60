"""The registry of backup drivers: target kind → the module and class that implement it,
imported on first use (the way :mod:`tminus.steps.registry` maps step kinds). It never
guesses: an unknown kind is an error naming the known ones. :mod:`tminus.backups.base` holds
the protocol and the shared checks and imports no driver."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from tminus.backups.base import DRIVER_KINDS, BackupDriver, BackupError

__all__ = ["BUILTIN_DRIVERS", "SCRATCH_CHECKS", "get_driver", "scratch_privilege_check"]

#: kind → ``module:class`` of its driver (imported on first use).
BUILTIN_DRIVERS: dict[str, str] = {
    "postgres": "tminus.backups.postgres:PostgresDriver",
    "mysql": "tminus.backups.mysql:MysqlDriver",
    "mariadb": "tminus.backups.mysql:MysqlDriver",
    "sqlite": "tminus.backups.sqlite:SqliteDriver",
    "files": "tminus.backups.files:FilesDriver",
}


def get_driver(kind: str) -> BackupDriver:
    """The driver for a target kind: postgres, mysql, mariadb (the mysql driver), sqlite or
    files. Any other kind is an error; nothing is guessed."""
    target = BUILTIN_DRIVERS.get(kind)
    if target is None:
        raise BackupError(
            f"no backup driver for kind {kind!r}", hint="known kinds: " + ", ".join(DRIVER_KINDS)
        )
    mod, _, cls = target.partition(":")
    driver: BackupDriver = getattr(import_module(mod), cls)()
    return driver


#: kind → module whose ``scratch_privilege_problem(url)`` says why the target's account cannot
#: create the scratch database or schema a verification restores into (None: it can).
SCRATCH_CHECKS: dict[str, str] = {
    "postgres": "tminus.backups.postgres",
    "mysql": "tminus.backups.mysql",
    "mariadb": "tminus.backups.mysql",
}


def scratch_privilege_check(kind: str) -> Callable[[str], str | None] | None:
    """The scratch-privilege check of a target kind's driver, or None when the kind needs
    none (sqlite, files)."""
    mod = SCRATCH_CHECKS.get(kind)
    if mod is None:
        return None
    check: Callable[[str], str | None] = import_module(mod).scratch_privilege_problem
    return check
