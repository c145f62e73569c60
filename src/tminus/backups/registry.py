"""The registry of backup drivers: target kind → the module and class that implement it,
imported on first use (the way :mod:`tminus.steps.registry` maps step kinds). It never
guesses: an unknown kind is an error naming the known ones. :mod:`tminus.backups.base` holds
the protocol and the shared checks and imports no driver."""

from __future__ import annotations

from collections.abc import Callable

from tminus.backups.base import DRIVER_KINDS, BackupDriver, BackupError
from tminus.registry import Registry, Unknown

__all__ = ["BUILTIN_DRIVERS", "DRIVERS", "SCRATCH_CHECKS", "get_driver", "scratch_privilege_check"]

#: kind → ``module:class`` of its driver (imported on first use).
BUILTIN_DRIVERS: dict[str, str] = {
    "postgres": "tminus.backups.postgres:PostgresDriver",
    "mysql": "tminus.backups.mysql:MysqlDriver",
    "mariadb": "tminus.backups.mysql:MysqlDriver",
    "sqlite": "tminus.backups.sqlite:SqliteDriver",
    "files": "tminus.backups.files:FilesDriver",
}
#: The drivers (built in only: the plan's data targets are a closed union).
DRIVERS: Registry[Callable[[], BackupDriver]] = Registry("backup driver", BUILTIN_DRIVERS)


def get_driver(kind: str) -> BackupDriver:
    """The driver for a target kind: postgres, mysql, mariadb (the mysql driver), sqlite or
    files. Any other kind is an error; nothing is guessed."""
    try:
        driver_class = DRIVERS.get(kind)
    except Unknown:
        raise BackupError(
            f"no backup driver for kind {kind!r}", hint="known kinds: " + ", ".join(DRIVER_KINDS)
        ) from None
    return driver_class()


#: kind → module whose ``scratch_privilege_problem(url)`` says why the target's account cannot
#: create the scratch database or schema a verification restores into (None: it can).
SCRATCH_CHECKS: dict[str, str] = {
    "postgres": "tminus.backups.postgres",
    "mysql": "tminus.backups.mysql",
    "mariadb": "tminus.backups.mysql",
}
_SCRATCH: Registry[Callable[[str], str | None]] = Registry(
    "scratch check", SCRATCH_CHECKS, default_attr="scratch_privilege_problem"
)


def scratch_privilege_check(kind: str) -> Callable[[str], str | None] | None:
    """The scratch-privilege check of a target kind's driver, or None when the kind needs
    none (sqlite, files)."""
    try:
        return _SCRATCH.get(kind)
    except Unknown:
        return None
