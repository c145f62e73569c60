"""``kind: restore``: restore the backup a backup step made (``from:``), into its own target
or the one named here. The driver checks every file of the backup first and refuses a damaged
one without touching the target, restores, then compares the result with the manifest.

``from: {deploy: latest|ID, backup: STEP}`` restores a backup an earlier deploy made (an
operation's usual case). It is looked up in the state store and checked against its manifest
by the preflight, before any step of the deploy runs, and again when the step runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tminus import work
from tminus.backups.base import BackupError, check_tools
from tminus.backups.recorded import read_manifest
from tminus.backups.registry import get_driver
from tminus.errors import PlanError
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import BackupRef, RestoreStep
from tminus.steps._data import (
    data_target,
    preflight_target,
    resolve_from,
    resolve_from_async,
)
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "RestoreKind"]


class RestoreKind(StepKindBase):
    kind: ClassVar[str] = "restore"

    def restores(self, step: RestoreStep) -> str | None:
        """The backup put back, as "database <- backup" (``from:`` as recorded)."""
        spec = step.model_dump(mode="json", by_alias=True, exclude_none=True)
        if spec.get("from") is None:
            return None
        return f"{spec.get('database') or ''} <- {spec.get('from')}"

    async def execute(self, step: RestoreStep, ctx: StepContext) -> StepOutcome:
        r = ctx.resolver
        try:
            art = await resolve_from_async(ctx.plan, r, step.from_, deploy_id=ctx.deploy_id)
        except PlanError as exc:
            return StepOutcome(False, error=r.mask(_with_hint(exc)))
        try:
            database, path = _into(step, art)
            target = data_target(ctx.plan, r, database=database, path=path)
        except (KeyError, PlanError) as exc:
            return StepOutcome(False, error=f"no target to restore into: {exc}")
        missing = check_tools(target.kind)
        if missing:
            return StepOutcome(False, error="; ".join(missing))
        try:
            manifest, digest = read_manifest(str(art["dir"]))
            if isinstance(step.from_, BackupRef) and digest != art["manifest_sha256"]:
                raise BackupError(
                    f"the manifest of backup {manifest.id} changed after it was checked "
                    f"(sha256 {art['manifest_sha256']}, now {digest}); refusing to use it"
                )
            driver = get_driver(target.kind)
            await work.in_thread(driver.restore, manifest, art["dir"], target.url, jobs=step.jobs)
        except BackupError as exc:
            return StepOutcome(False, error=r.mask(str(exc)))
        artifacts: dict[str, Any] = {"backup_id": manifest.id, "target": target.name}
        source = ""
        if isinstance(step.from_, BackupRef):
            source = f" (backup '{step.from_.backup}' of deploy {art['deploy_id']})"
            artifacts.update(
                from_deploy=art["deploy_id"],
                from_step=step.from_.backup,
                dir=art["dir"],
                manifest_sha256=art["manifest_sha256"],
            )
            if art.get("skipped"):
                artifacts["skipped"] = art["skipped"]
        msg = f"restored {manifest.id}{source} into {target.name}; it matches the manifest"
        ctx.log(msg)
        return StepOutcome(True, msg, artifacts=artifacts)

    def preflight(
        self, step: RestoreStep, plan: Plan, resolver: Resolver, state_dir: Path
    ) -> list[str]:
        database, path = step.database, step.path
        if isinstance(step.from_, BackupRef):
            # An earlier deploy's backup: it must exist and verify before anything runs.
            try:
                art = resolve_from(plan, resolver, step.from_, deploy_id=None)
            except PlanError as exc:
                return [f"{step.title()}: {_with_hint(exc)}"]
            database, path = _into(step, art)
            pool = plan.targets.databases if database is not None else plan.targets.paths
            name = database if database is not None else path
            if name not in pool:
                return [
                    f"{step.title()}: backup {art['backup_id']} of deploy {art['deploy_id']} is "
                    f"of {art['target_role']} '{name}', which this plan does not declare: name "
                    "the target to restore into (database: or path:)"
                ]
            kind = plan.targets.databases[database].kind if database is not None else "files"
            if _family(kind) != _family(str(art["kind"])):
                return [
                    f"{step.title()}: backup {art['backup_id']} is a {art['kind']} backup and "
                    f"cannot be restored into {name} ({kind})"
                ]
        elif database is None and path is None:
            return []  # the backup's own target: checked by the backup step's preflight
        return preflight_target(
            plan,
            resolver,
            database=database,
            path=path,
            dest=None,
            state_dir=state_dir,
            need_disk=False,
        )

    def compensation(self, step: RestoreStep, ctx: StepContext) -> Compensation | None:
        return None


def _into(step: RestoreStep, art: dict[str, Any]) -> tuple[str | None, str | None]:
    """(database, path) to restore into: the step's, else the backup's own target."""
    if step.database is not None or step.path is not None:
        return step.database, step.path
    if art["target_role"] == "path":
        return None, str(art["target"])
    return str(art["target"]), None


def _family(kind: str) -> str:
    return "mysql" if kind == "mariadb" else kind


def _with_hint(exc: PlanError) -> str:
    return str(exc) + (f" ({exc.hint})" if exc.hint else "")


KIND = RestoreKind()
