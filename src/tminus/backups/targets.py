"""A plan's data targets and the backups its steps name: a database or path target →
(driver kind, URL), and what ``from:`` of a restore or verify_backup step points at (a backup
of this deploy, or one an earlier deploy recorded). Shared by the data-safety step kinds, the
``no_data_loss`` and ``verify_backup`` metric sources and ``tminus backups``, so none of them
imports another's package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tminus import work
from tminus.backups.base import BackupError, Manifest, check_tools
from tminus.backups.recorded import candidates, pick
from tminus.backups.registry import get_driver
from tminus.errors import PlanError
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan, parent_plan_name
from tminus.plan.steps import BackupRef

__all__ = [
    "DataTarget",
    "data_target",
    "from_backup",
    "resolve_from",
    "resolve_from_async",
    "verify_backup",
]


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
    try:
        found = _candidates(plan, r, ref, deploy_id)
        rec, _manifest, skipped = await work.in_thread(pick, found, **_ref_args(plan, ref))
    except BackupError as exc:
        raise _ref_error(ref, exc) from None
    return {**rec.artifacts(), "skipped": skipped}


def _ref_args(plan: Plan, ref: BackupRef) -> dict[str, str]:
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
    if r.store is None:
        raise PlanError(
            f"from: {{deploy: {ref.deploy}, backup: {ref.backup}}} needs the state store, "
            "and this run has none"
        )
    before = r.store.deploy(deploy_id)["created_at"] if deploy_id else None
    return candidates(r.store, **_ref_args(plan, ref), before=before, exclude=deploy_id)


async def verify_backup(
    plan: Plan, r: Resolver, backup_step: str | BackupRef, deploy_id: str | None = None
) -> tuple[bool, str, Any]:
    """(ok, message, report) of a scratch restore of ``backup_step``'s backup (a backup step
    of this deploy, or an earlier deploy's: see :func:`resolve_from`)."""
    art = await resolve_from_async(plan, r, backup_step, deploy_id=deploy_id)
    role = str(art["target_role"])
    target = data_target(
        plan,
        r,
        database=str(art["target"]) if role == "database" else None,
        path=str(art["target"]) if role == "path" else None,
    )
    missing = check_tools(target.kind)
    if missing:
        return False, "; ".join(missing), None
    manifest = Manifest.load(art["dir"])
    driver = get_driver(target.kind)
    report = await work.in_thread(driver.verify, manifest, art["dir"], target.url)
    return report.ok, r.mask(report.summary()), report
