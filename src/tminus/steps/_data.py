"""Shared by the data-safety step kinds: a database or path target → (driver kind, URL)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tminus import work
from tminus.errors import PlanError
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan

__all__ = ["DataTarget", "backup_root", "data_target", "disk_preflight", "from_backup"]

#: Free space a backup needs, as a multiple of the target's estimated size.
DISK_MARGIN = 1.2


@dataclass(frozen=True)
class DataTarget:
    name: str
    role: str  # "database" or "path"
    kind: str  # driver kind: postgres, mysql, mariadb, sqlite, files
    url: str  # resolved: a database URL, or a filesystem path


def data_target(plan: Plan, r: Resolver, *, database: str | None, path: str | None) -> DataTarget:
    if database is not None:
        db = plan.targets.databases[database]
        return DataTarget(database, "database", db.kind, r.resolve(db.url))
    if path is not None:
        pt = plan.targets.paths[path]
        return DataTarget(path, "path", "files", r.resolve(pt.path))
    raise PlanError("a data step needs a database or a path target")


def backup_root(dest: str | None, r: Resolver, state_dir: Path) -> Path:
    return Path(r.resolve(dest)) if dest else state_dir / "backups"


def from_backup(r: Resolver, backup_step: str) -> dict[str, Any]:
    """The artifacts a backup step recorded (its directory, target, kind)."""
    assert r.artifacts is not None
    out = {k: r.artifacts(backup_step, k) for k in ("dir", "kind", "target", "target_role")}
    if not out["dir"]:
        raise PlanError(
            f"backup '{backup_step}' has not run in this deploy, so there is nothing to use",
            hint="the backup step must succeed before a restore or verification uses it",
        )
    return out


async def disk_preflight(driver: Any, target: DataTarget, root: Path) -> str | None:
    """An error message when the disk under ``root`` lacks 1.2 × the target's size."""
    root.mkdir(parents=True, exist_ok=True)
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
    from tminus.backups.base import check_tools, get_driver

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
