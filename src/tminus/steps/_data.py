"""Shared by the data-safety step kinds: preflights, backup roots, exposure warnings; a data
target and ``from:`` resolution live in :mod:`tminus.backups.targets` (re-exported here)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from tminus import work
from tminus.backups.targets import (
    DataTarget,
    data_target,
    from_backup,
    resolve_from,
    resolve_from_async,
)
from tminus.files import private_dir
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan

__all__ = [
    "DataTarget",
    "backup_root",
    "data_target",
    "disk_preflight",
    "from_backup",
    "resolve_from",
    "resolve_from_async",
    "scratch_preflight",
]

#: Free space a backup needs, as a multiple of the target's estimated size.
DISK_MARGIN = 1.2


def backup_root(dest: str | None, r: Resolver, state_dir: Path) -> Path:
    return Path(r.resolve(dest)) if dest else state_dir / "backups"


async def disk_preflight(driver: Any, target: DataTarget, root: Path) -> str | None:
    """An error message when the disk under ``root`` lacks 1.2 × the target's size."""
    private_dir(root, tighten=False)  # made 0700 if missing; BackupDir decides on tightening
    estimate = int(await work.in_thread(driver.estimate_size, target.url))
    free = shutil.disk_usage(root).free
    need = int(estimate * DISK_MARGIN)
    if free < need:
        return (
            f"not enough disk space for the backup of {target.name}: {free / 1e9:.2f} GB free "
            f"under {root}, {need / 1e9:.2f} GB needed (estimated size × {DISK_MARGIN})"
        )
    return None


def preflight_target(
    plan: Plan,
    r: Resolver,
    *,
    database: str | None,
    path: str | None,
    dest: str | None,
    state_dir: Path,
    need_disk: bool,
) -> list[str]:
    """Tools for the target's kind, and (for a backup) 1.2 × its size free under ``dest``."""
    from tminus.backups.base import check_tools
    from tminus.backups.registry import get_driver

    try:
        target = data_target(plan, r, database=database, path=path)
    except Exception as exc:  # unresolvable URL: reported by the step itself
        return [str(exc)]
    problems = check_tools(target.kind)
    if problems or not need_disk:
        return problems
    try:
        message = asyncio.run(
            disk_preflight(get_driver(target.kind), target, backup_root(dest, r, state_dir))
        )
    except Exception:  # not reachable yet (an earlier step may create it): the step checks again
        return []
    return [message] if message else []


def scratch_preflight(target: DataTarget) -> list[str]:
    """A verification restores into a scratch database (PostgreSQL: the role needs CREATEDB
    or superuser) or schema (MariaDB/MySQL: the CREATE privilege): one problem when the
    target's account lacks it. A target not reachable yet is checked by the step itself."""
    from tminus.backups.registry import scratch_privilege_check

    check = scratch_privilege_check(target.kind)
    if check is None:
        return []
    try:
        problem = check(target.url)
    except Exception:  # not reachable yet (an earlier step may create it)
        return []
    return [f"database {target.name}: {problem}"] if problem else []
