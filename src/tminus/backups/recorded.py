"""Backups that deploys recorded in the state store: the one an earlier deploy made
(``from: {deploy: latest|ID, backup: STEP}``) and the deploy that made a given backup.

A backup step records its backup as artifacts (``backup_id``, ``dir``, ``kind``, ``target``,
``target_role``). A recorded backup is used only if its manifest is well formed and every file
matches it (size and sha256): fail closed, a damaged backup is never chosen.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tminus.backups.base import MANIFEST_NAME, BackupError, Manifest, require_intact

__all__ = [
    "RecordedBackup",
    "candidates",
    "deploys_recording",
    "find_backup",
    "load_recorded",
    "pick",
    "read_manifest",
]


@dataclass(frozen=True)
class RecordedBackup:
    """A backup a deploy recorded, checked against its manifest."""

    deploy_id: str
    step_id: str
    backup_id: str
    dir: str
    kind: str
    target: str
    target_role: str
    manifest_sha256: str
    created_at: str

    def artifacts(self) -> dict[str, Any]:
        return asdict(self)


def read_manifest(backup_dir: str) -> tuple[Manifest, str]:
    """The manifest of a backup and the sha256 of its ``manifest.json``, from one read."""
    path = Path(backup_dir) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BackupError(f"{path} is not UTF-8 text") from None
    return Manifest.from_json(text), hashlib.sha256(raw).hexdigest()


def load_recorded(
    deploy_id: str, step_id: str, arts: dict[str, Any]
) -> tuple[RecordedBackup, Manifest]:
    """The backup a step's artifacts name, checked: its manifest loads, names the same backup,
    and every file matches it. Raises :class:`BackupError` (saying why) otherwise."""
    backup_id, bdir = arts.get("backup_id"), arts.get("dir")
    if not backup_id or not bdir:
        raise BackupError(f"deploy {deploy_id}: step '{step_id}' recorded no backup")
    manifest, digest = read_manifest(str(bdir))
    if manifest.id != backup_id:
        raise BackupError(f"deploy {deploy_id}: {bdir} holds backup {manifest.id}, not {backup_id}")
    require_intact(manifest, str(bdir), manifest.kind)
    rec = RecordedBackup(
        deploy_id=deploy_id,
        step_id=step_id,
        backup_id=str(backup_id),
        dir=str(bdir),
        kind=str(arts.get("kind") or manifest.kind),
        target=str(arts.get("target") or ""),
        target_role=str(arts.get("target_role") or "database"),
        manifest_sha256=digest,
        created_at=manifest.created_at,
    )
    return rec, manifest


def _of_plan(d: dict[str, Any], plan_name: str) -> bool:
    """A deploy of the plan, or of one of its operations (``<plan>.op.<name>``)."""
    name = str(d["plan_name"])
    return name == plan_name or name.startswith(plan_name + ".op.")


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda d: (d["created_at"], d["seq"]), reverse=True)


def candidates(
    store: Any,
    *,
    plan_name: str,
    environment: str,
    deploy: str,
    backup: str,
    before: datetime | None = None,
    exclude: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """(deploy id, artifacts of step ``backup``) of the deploys that may hold the backup,
    newest first: deploy ``deploy``, or with ``deploy: latest`` every deploy of ``plan_name``
    (or of one of its operations, where a backup step of an operation records) in
    ``environment`` created before ``before``, other than ``exclude``, that recorded one. Reads
    the store only (on the store's thread); :func:`pick` checks the files. Raises
    :class:`BackupError` for a deploy id that is unknown, of another plan or environment, or
    that recorded no such backup."""
    if deploy != "latest":
        from tminus.errors import NotFound

        try:
            d = store.deploy(deploy)
        except NotFound:
            raise BackupError(
                f"no deploy '{deploy}' in the state store {store.safe_url}",
                hint="`tminus list` shows the deploys",
            ) from None
        if not _of_plan(d, plan_name) or d["environment"] != environment:
            raise BackupError(
                f"deploy {deploy} is of plan '{d['plan_name']}' in {d['environment']}, not of "
                f"'{plan_name}' in {environment}: its backups are not this plan's to restore"
            )
        arts = store.artifacts_by_step_id(deploy).get(backup) or {}
        if not arts.get("backup_id"):
            raise BackupError(
                f"deploy {deploy} recorded no backup '{backup}' (the step did not run or failed)",
                hint="pick a deploy whose backup step succeeded, or from: {deploy: latest, …}",
            )
        return [(deploy, arts)]
    rows = [
        d
        for d in store.list_deploys(limit=100_000)
        if _of_plan(d, plan_name)
        and d["environment"] == environment
        and d["id"] != exclude
        and (before is None or d["created_at"] < before)
    ]
    out: list[tuple[str, dict[str, Any]]] = []
    for d in _newest_first(rows):
        arts = store.artifacts_by_step_id(d["id"]).get(backup) or {}
        if arts.get("backup_id"):
            out.append((str(d["id"]), arts))
    return out


def pick(
    found: list[tuple[str, dict[str, Any]]],
    *,
    plan_name: str,
    environment: str,
    deploy: str,
    backup: str,
) -> tuple[RecordedBackup, Manifest, list[str]]:
    """The first of :func:`candidates` whose manifest and files verify, its manifest, and why
    newer ones were passed over. A deploy id has one candidate: if it does not verify, that is
    the error. Raises :class:`BackupError` when none verifies."""
    skipped: list[str] = []
    for deploy_id, arts in found:
        try:
            rec, manifest = load_recorded(deploy_id, backup, arts)
        except BackupError as exc:
            if deploy != "latest":
                raise
            skipped.append(f"{deploy_id}: {exc}")
            continue
        return rec, manifest, skipped
    why = f" (passed over: {'; '.join(skipped)})" if skipped else ""
    raise BackupError(
        f"no earlier deploy of plan '{plan_name}' in {environment} recorded a backup "
        f"'{backup}' that verifies{why}",
        hint="run the deploy that makes it first, or name one: from: {deploy: ID, backup: "
        f"{backup}}}",
    )


def find_backup(
    store: Any,
    *,
    plan_name: str,
    environment: str,
    deploy: str,
    backup: str,
    before: datetime | None = None,
    exclude: str | None = None,
) -> tuple[RecordedBackup, Manifest, list[str]]:
    """:func:`pick` of :func:`candidates`: the backup ``{deploy: …, backup: …}`` names."""
    found = candidates(
        store,
        plan_name=plan_name,
        environment=environment,
        deploy=deploy,
        backup=backup,
        before=before,
        exclude=exclude,
    )
    return pick(found, plan_name=plan_name, environment=environment, deploy=deploy, backup=backup)


def deploys_recording(store: Any, backup_id: str) -> list[tuple[str, str]]:
    """(deploy id, step id) of every step whose artifacts name backup ``backup_id``: the
    backup step that made it first (then restores of it), newest deploy first."""
    made: list[tuple[str, str]] = []
    used: list[tuple[str, str]] = []
    for d in _newest_first(store.list_deploys(limit=100_000)):
        for step_id, arts in store.artifacts_by_step_id(d["id"]).items():
            if isinstance(arts, dict) and arts.get("backup_id") == backup_id:
                (used if arts.get("from_deploy") else made).append((str(d["id"]), step_id))
    return made + used
