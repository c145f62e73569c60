"""Validation of artifacts: a backup or snapshot a step or check uses is a step of that kind
that runs before it in the same deploy (or, ``from: {deploy: ...}``, of an earlier deploy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tminus.plan._validate_base import _Collector
from tminus.plan.checks import BackupCheck, CheckUse, NoDataLossCheck
from tminus.plan.model import Plan
from tminus.plan.problems import Loc, did_you_mean
from tminus.plan.steps import BackupStep, MigrateStep, RestoreStep, SnapshotStep, VerifyBackupStep
from tminus.plan.walk import Position, StepSite, iter_check_sites, resolve_check


def _backup_sites(steps: list[StepSite]) -> dict[str, StepSite]:
    return {s.step.id: s for s in steps if s.step.id and isinstance(s.step, BackupStep)}


def _artifacts(plan: Plan, steps: list[StepSite], c: _Collector) -> None:
    by_id = {s.step.id: s for s in steps if s.step.id}
    backups = _backup_sites(steps)
    snapshots = {k: s for k, s in by_id.items() if isinstance(s.step, SnapshotStep)}
    from tminus.plan.model import parent_plan_name

    # The plan an operation runs as holds its steps, not the backup steps of its plan.
    derived = parent_plan_name(plan) != plan.name

    def need_before(
        kind: str, ref: str, path: Loc, at: Position, pool: dict[str, StepSite]
    ) -> StepSite | None:
        site = pool.get(ref)
        if site is None:
            other = by_id.get(ref)
            if other is not None:
                c.add(
                    "error",
                    f"not-a-{kind}",
                    f"step '{ref}' is not a {kind} step",
                    path,
                    f"name the id of a {kind} step",
                )
            else:
                hint = did_you_mean(ref, pool) or (
                    f"add a {kind} step with 'id: {ref}' before this one"
                    if not pool
                    else f"{kind} steps: {', '.join(sorted(pool))}"
                )
                c.add("error", f"undefined-{kind}", f"no {kind} step with id '{ref}'", path, hint)
            return None
        if not at.can_see(site.position):
            c.add(
                "error",
                f"{kind}-after-use",
                f"{kind} '{ref}' runs after the step that uses it",
                path,
                f"move the {kind} step before this one (it is at {_dotted(site.path)})",
            )
            return None
        return site

    for site in steps:
        s, p = site.step, site.path
        if isinstance(s, RestoreStep | VerifyBackupStep):
            b = _backup_from(s, site, backups, by_id, c, need_before, derived)
            if b is not None and isinstance(s, RestoreStep) and isinstance(b.step, BackupStep):
                ref = s.from_ if isinstance(s.from_, str) else s.from_.backup
                if s.database and b.step.database is None:
                    c.add(
                        "error",
                        "restore-mismatch",
                        f"backup '{ref}' is of a path, not a database",
                        (*p, "database"),
                    )
                if s.path and b.step.path is None:
                    c.add(
                        "error",
                        "restore-mismatch",
                        f"backup '{ref}' is of a database, not a path",
                        (*p, "path"),
                    )
        if isinstance(s, BackupStep | RestoreStep) and "jobs" in s.model_fields_set:
            _jobs_effect(plan, s, backups, c, p)
        if isinstance(s, MigrateStep) and s.backup:
            need_before("backup", s.backup, (*p, "backup"), site.position, backups)
    for csite in iter_check_sites(plan):
        chk = resolve_check(plan, csite.check) if isinstance(csite.check, CheckUse) else csite.check
        if isinstance(chk, BackupCheck):
            need_before("backup", chk.backup, csite.path, csite.position, backups)
        if isinstance(chk, NoDataLossCheck):
            need_before("snapshot", chk.snapshot, csite.path, csite.position, snapshots)


def _jobs_effect(
    plan: Plan, s: BackupStep | RestoreStep, backups: dict[str, StepSite], c: _Collector, p: Loc
) -> None:
    """``jobs`` set on a backup or restore of a target whose driver runs no parallel jobs
    (MySQL, MariaDB and SQLite dumps, path targets): only PostgreSQL's does."""
    database, path = s.database, s.path
    if isinstance(s, RestoreStep) and database is None and path is None:
        ref = s.from_ if isinstance(s.from_, str) else s.from_.backup
        site = backups.get(ref)
        if site is None or not isinstance(site.step, BackupStep):
            return
        database, path = site.step.database, site.step.path
    db = plan.targets.databases.get(database) if database else None
    kind = db.kind if db is not None else ("files" if path else None)
    if kind is None or kind == "postgres":
        return
    c.add(
        "error",
        "jobs-no-effect",
        f"'jobs' has no effect on a {s.kind} of a {kind} target: only PostgreSQL's pg_dump "
        "and pg_restore run parallel jobs",
        (*p, "jobs"),
        "remove 'jobs'",
    )


def _backup_from(
    s: RestoreStep | VerifyBackupStep,
    site: StepSite,
    backups: dict[str, StepSite],
    by_id: dict[str, StepSite],
    c: _Collector,
    need_before: Callable[[str, str, Loc, Position, dict[str, StepSite]], StepSite | None],
    derived: bool,
) -> StepSite | None:
    """The backup step ``from:`` names. A plain id names a backup step of the same deploy:
    the same phase list, or the same operation (an operation runs as a deploy of its own, so
    a phase's backup is not in it). ``{deploy: latest|ID, backup: ID}`` names a backup an
    earlier deploy made, found in the state store before the deploy starts."""
    p = site.path
    if not isinstance(s.from_, str):
        b = backups.get(s.from_.backup)
        if b is None:
            if s.from_.backup in by_id:
                c.add(
                    "error",
                    "not-a-backup",
                    f"step '{s.from_.backup}' is not a backup step",
                    (*p, "from", "backup"),
                    "name the id of a backup step",
                )
            elif not derived:
                hint = did_you_mean(s.from_.backup, backups) or (
                    f"backup steps: {', '.join(sorted(backups))}"
                    if backups
                    else "the plan has no backup step, so no deploy of it recorded one"
                )
                c.add(
                    "error",
                    "undefined-backup",
                    f"no backup step with id '{s.from_.backup}' in the plan",
                    (*p, "from", "backup"),
                    hint,
                )
        return b
    b = backups.get(s.from_)
    if b is not None and _deploy_of(b.path) != _deploy_of(p):
        c.add(
            "error",
            "backup-of-another-deploy",
            f"backup '{s.from_}' is made by "
            + ("the deployment" if b.path[0] == "phases" else f"operation '{b.path[1]}'")
            + ", which runs as another deploy: it has not run in "
            + ("this operation" if p[0] == "operations" else "the deployment"),
            (*p, "from"),
            f"restore the backup an earlier deploy made: from: {{deploy: latest, backup: "
            f"{s.from_}}} (or a deploy id instead of latest)",
        )
        return None
    return need_before("backup", s.from_, (*p, "from"), site.position, backups)


def _deploy_of(path: Loc) -> tuple[Any, ...]:
    """Which deploy a step runs in: the deployment (``phases``) or one operation."""
    return tuple(path[:2]) if path and path[0] == "operations" else ("phases",)


def _dotted(path: Loc) -> str:
    return "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in path).lstrip(".")
