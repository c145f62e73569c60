"""Shared by the data-safety step kinds: a database or path target → (driver kind, URL)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tminus import work
from tminus.errors import PlanError
from tminus.files import STATE_DIR_NAME, exposure, private_dir
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import BackupRef, BackupStep

__all__ = [
    "DataTarget",
    "backup_root",
    "data_target",
    "disk_preflight",
    "exposure_warnings",
    "from_backup",
    "resolve_from",
    "resolve_from_async",
    "scratch_preflight",
]

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


def resolve_from(
    plan: Plan, r: Resolver, ref: str | BackupRef, *, deploy_id: str | None
) -> dict[str, Any]:
    """What ``from:`` of a restore or verify_backup step names: the artifacts of a backup step
    of this deploy (a plain id), or a backup an earlier deploy recorded (``{deploy: latest|ID,
    backup: ID}``), found in the state store and checked against its manifest (fail closed).
    ``latest`` is the newest deploy of the plan (an operation: of its plan) in the same
    environment, created before ``deploy_id`` (the running deploy; None before it exists),
    whose backup verifies. The result also has ``deploy_id``, ``backup_id``,
    ``manifest_sha256`` and ``skipped`` (newer deploys passed over, and why) for a reference.
    Raises :class:`PlanError` saying why there is none."""
    if isinstance(ref, str):
        return from_backup(r, ref)
    from tminus.backups.base import BackupError
    from tminus.backups.recorded import pick

    try:
        found = _candidates(plan, r, ref, deploy_id)
        rec, _manifest, skipped = pick(found, **_ref_args(plan, ref))
    except BackupError as exc:
        raise _ref_error(ref, exc) from None
    return {**rec.artifacts(), "skipped": skipped}


async def resolve_from_async(
    plan: Plan, r: Resolver, ref: str | BackupRef, *, deploy_id: str | None
) -> dict[str, Any]:
    """:func:`resolve_from` in a running step: the store is read on the engine's thread (its
    one connection is not shared across threads) and the backup files are hashed in a worker
    thread (a cancelled step stops waiting for them)."""
    if isinstance(ref, str):
        return from_backup(r, ref)
    from tminus.backups.base import BackupError
    from tminus.backups.recorded import pick

    try:
        found = _candidates(plan, r, ref, deploy_id)
        rec, _manifest, skipped = await work.in_thread(pick, found, **_ref_args(plan, ref))
    except BackupError as exc:
        raise _ref_error(ref, exc) from None
    return {**rec.artifacts(), "skipped": skipped}


def _ref_args(plan: Plan, ref: BackupRef) -> dict[str, str]:
    from tminus.engine.operations import parent_plan_name

    return {
        "plan_name": parent_plan_name(plan),
        "environment": plan.environment,
        "deploy": ref.deploy,
        "backup": ref.backup,
    }


def _ref_error(ref: BackupRef, exc: Any) -> PlanError:
    return PlanError(
        f"cannot restore backup '{ref.backup}' of deploy {ref.deploy}: {exc}", hint=exc.hint
    )


def _candidates(
    plan: Plan, r: Resolver, ref: BackupRef, deploy_id: str | None
) -> list[tuple[str, dict[str, Any]]]:
    from tminus.backups.recorded import candidates

    if r.store is None:
        raise PlanError(
            f"from: {{deploy: {ref.deploy}, backup: {ref.backup}}} needs the state store, "
            "and this run has none"
        )
    before = r.store.deploy(deploy_id)["created_at"] if deploy_id else None
    return candidates(r.store, **_ref_args(plan, ref), before=before, exclude=deploy_id)


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


def scratch_preflight(target: DataTarget) -> list[str]:
    """A verification restores into a scratch database (PostgreSQL: the role needs CREATEDB
    or superuser) or schema (MariaDB/MySQL: the CREATE privilege): one problem when the
    target's account lacks it. A target not reachable yet is checked by the step itself."""
    check: Any
    if target.kind == "postgres":
        from tminus.backups.postgres import scratch_privilege_problem as check
    elif target.kind in ("mysql", "mariadb"):
        from tminus.backups.mysql import scratch_privilege_problem as check
    else:
        return []
    try:
        problem = check(target.url)
    except Exception:  # not reachable yet (an earlier step may create it)
        return []
    return [f"database {target.name}: {problem}"] if problem else []


def exposure_warnings(plan: Plan, r: Resolver | None, state_dir: Path) -> list[str]:
    """``tminus check`` and ``run``: the state directory and the plan's backup directories
    that exist and are open to their group or other users. A ``dest`` that cannot be resolved
    yet (a secret, an artifact) is skipped."""
    from tminus.plan.walk import iter_steps

    owned = state_dir.resolve().name == STATE_DIR_NAME
    fix = "`tminus run` makes it 0700" if owned else ""
    dirs: dict[Path, tuple[str, str]] = {state_dir.resolve(): ("the state directory", fix)}
    for site in iter_steps(plan):
        if not isinstance(site.step, BackupStep):
            continue
        dest = site.step.dest
        if dest is None:
            root = state_dir / "backups"
        elif "${" not in dest:
            root = Path(dest)
        elif r is None:
            continue
        else:
            try:
                root = Path(r.resolve(dest))
            except Exception:  # unresolvable here: the step resolves it when it runs
                continue
        fix = "its next backup makes it 0700" if owned and dest is None else ""
        dirs.setdefault(root.resolve(), ("the backup directory", fix))
    return [w for d, (what, fix) in dirs.items() if (w := exposure(d, what, fix))]
