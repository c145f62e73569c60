"""What the tools of ``kind: migrate`` share: the error, the log callback, the thread runner and
the :class:`_Tool` interface (``current()``, ``up()``, ``down_to(version)``) that
:mod:`tminus.steps._migrate_sql_dir`, :mod:`tminus.steps._migrate_alembic` and
:mod:`tminus.steps._migrate_command` implement for :mod:`tminus.steps.migrate`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from tminus import work

__all__ = ["Log", "MigrateError"]

_T = TypeVar("_T")
Log = Callable[[str], None]


class MigrateError(Exception):
    """A migration problem with a message meant for the operator."""


# --- helpers ---------------------------------------------------------------------------------
async def _in_thread(fn: Callable[..., _T], *args: Any) -> _T:
    """Run blocking migration work in a thread (:func:`tminus.work.in_thread`). If the step is
    cancelled (its timeout, an abort), the running statement is cancelled on the server (the
    SQLAlchemy connections of the thread, alembic's too, register their cancel), so its
    transaction rolls back where the database allows (PostgreSQL and SQLite DDL; MariaDB's DDL
    commits on its own, and a ``sql_dir`` version is left dirty); the thread is awaited before
    the cancellation goes on, so a rollback never starts while the migration still runs."""
    return await work.in_thread(fn, *args)


def _shown(value: Any) -> str:
    return "none" if value is None else str(value)


class _Tool(Protocol):
    """What the kind needs from a tool. Versions: int (sql_dir) or str (alembic, command);
    None means "nothing applied" (alembic base, no row in schema_migrations)."""

    async def current(self) -> Any: ...

    async def up(self) -> None: ...

    async def down_to(self, target: Any) -> None: ...
