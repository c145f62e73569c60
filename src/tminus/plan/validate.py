"""Semantic validation: what a schema cannot see. References to undefined targets, roles,
checks and artifacts; duplicate names; a restore with no backup before it; estimates that
exceed the window; a downtime phase with no maintenance; and risky-but-legal warnings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel

from tminus.plan.checks import (
    BackupCheck,
    CheckBase,
    CheckUse,
    HaproxyCheck,
    NoDataLossCheck,
    PrometheusCheck,
    SqlCheck,
)
from tminus.plan.interpolate import BUILTIN_VARIABLES, ResolveError, Resolver, references
from tminus.plan.lint_secrets import secret_problems
from tminus.plan.lint_shell import shell_problems
from tminus.plan.lint_sql import sql_problems
from tminus.plan.model import Plan
from tminus.plan.paths import literal_dotdot
from tminus.plan.problems import Loc, Problem, did_you_mean
from tminus.plan.steps import (
    FLEET_HOOK_VARIABLES,
    FLEET_HOST_VARIABLES,
    ApproveStep,
    BackupStep,
    BlueGreenStep,
    CanaryStep,
    FlagStep,
    MaintenanceStep,
    MigrateStep,
    ReleaseStep,
    RestoreStep,
    RunStep,
    SnapshotStep,
    SqlStep,
    SshStep,
    StepBase,
    TrafficStep,
    UploadStep,
    VerifyBackupStep,
    WaitStep,
    batch_problem,
    max_fail_problem,
)
from tminus.plan.targets import FlagsRouter, HaproxyRouter
from tminus.plan.values import (
    DeferredDuration,
    format_duration,
    resolve_condition,
    resolve_duration,
)
from tminus.plan.walk import Position, StepSite, iter_check_sites, iter_steps, resolve_check

__all__ = ["validate_plan"]

Severity = Literal["error", "warning"]


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(
        self,
        severity: Severity,
        code: str,
        message: str,
        path: Loc,
        hint: str | None = None,
        *,
        key: bool = False,
    ) -> None:
        self.problems.append(
            Problem(
                severity, code, message, path=path, hint=hint, key=str(path[-1]) if key else None
            )
        )

    def undefined(
        self,
        what: str,
        name: str,
        path: Loc,
        defined: Iterable[str],
        where: str,
        *,
        key: bool = False,
    ) -> None:
        names = sorted(set(defined))
        hint = did_you_mean(name, names)
        if hint is None:
            hint = f"define it under '{where}'" + (
                f" (defined: {', '.join(names)})" if names else ""
            )
        self.add(
            "error",
            f"undefined-{what.replace(' ', '-')}",
            f"undefined {what} '{name}'",
            path,
            hint,
            key=key,
        )


def validate_plan(plan: Plan, data: Any = None) -> list[Problem]:
    """All semantic problems of a plan that passed schema validation."""
    c = _Collector()
    steps = list(iter_steps(plan))
    _names(plan, steps, c)
    _targets(plan, steps, c, data)
    _roles(plan, steps, c)
    _checks(plan, c)
    _artifacts(plan, steps, c)
    _window(plan, c)
    _maintenance(plan, c)
    _triggers(plan, c)
    _notifications(plan, c)
    _operations(plan, c)
    _fleet(steps, c)
    _variables(plan, data, c, _fleet_scopes(steps))
    _deferred_durations(plan, steps, c)
    _warnings(plan, steps, c)
    c.problems.extend(shell_problems(plan))
    c.problems.extend(sql_problems(plan))
    c.problems.extend(secret_problems(plan, data))
    return c.problems


def _deferred_in(
    model: Any, path: Loc, *, top: bool = True
) -> Iterator[tuple[Loc, DeferredDuration]]:
    """The ``${…}`` durations of a step (not of the steps nested in it: sites of their own)."""
    if isinstance(model, DeferredDuration):
        yield path, model
    elif isinstance(model, list):
        for i, v in enumerate(model):
            yield from _deferred_in(v, (*path, i), top=False)
    elif isinstance(model, BaseModel) and (top or not isinstance(model, StepBase)):
        for name, info in type(model).model_fields.items():
            yield from _deferred_in(getattr(model, name), (*path, info.alias or name), top=False)


def _deferred_durations(plan: Plan, steps: list[StepSite], c: _Collector) -> None:
    """A duration (``pause: ${hold}``) or a check's condition (``expect: "> ${min}"``) written
    with variables must be one with the plan's values of them; one that needs run-time values
    (env, secrets, artifacts) is checked when it runs."""
    try:
        r = Resolver.for_plan(plan.variables, {}, env={})
    except (ResolveError, ValueError):
        return
    seen: set[int] = set()
    for site in steps:
        for path, d in _deferred_in(site.step, site.path):
            seen.add(id(d))
            try:
                resolve_duration(d, r.resolve, str(path[-1]))
            except ResolveError:
                continue
            except ValueError as exc:
                c.add("error", "bad-duration", str(exc), path, "write e.g. 30s, 5m, 1h30m or 2d")
    # a check's `interval: ${every}` (declared checks; those inline in steps are done above)
    for check_site in iter_check_sites(plan):
        every = getattr(check_site.check, "interval", None)
        if not isinstance(every, DeferredDuration) or id(every) in seen:
            continue
        seen.add(id(every))
        try:
            resolve_duration(every, r.resolve, "interval")
        except ResolveError:
            continue
        except ValueError as exc:
            c.add(
                "error",
                "bad-duration",
                str(exc),
                (*check_site.path, "interval"),
                "write e.g. 30s, 5m, 1h30m or 2d",
            )
    # conditions written with variables (`expect: "> ${min}"`): the same, as conditions
    for check_site in iter_check_sites(plan):
        for level in ("expect", "warn", "critical"):
            cond = getattr(check_site.check, level, None)
            if cond is None or not cond.deferred:
                continue
            try:
                resolve_condition(cond, r.resolve)
            except ResolveError:
                continue
            except ValueError as exc:
                c.add(
                    "error",
                    "bad-condition",
                    f"'{cond.text}' with the plan's values: {exc}",
                    (*check_site.path, level),
                    "a condition is an operator and a value, like '< 0.01' or 'contains \"ok\"'",
                )


def _names(plan: Plan, steps: list[StepSite], c: _Collector) -> None:
    seen: dict[str, int] = {}
    for i, phase in enumerate(plan.phases):
        if phase.name in seen:
            c.add(
                "error",
                "duplicate-phase",
                f"duplicate phase name '{phase.name}' (also phase {seen[phase.name] + 1})",
                ("phases", i, "name"),
                "phase names identify phases in status, resume and the runbook; make them unique",
            )
        seen.setdefault(phase.name, i)
    ids: dict[str, Loc] = {}
    for site in steps:
        sid = site.step.id
        if sid is None:
            continue
        if sid in ids:
            c.add(
                "error",
                "duplicate-step-id",
                f"duplicate step id '{sid}'",
                (*site.path, "id"),
                "step ids name artifacts and must be unique in the plan",
            )
        ids.setdefault(sid, site.path)
    items: set[str] = set()
    for i, item in enumerate(plan.checklist):
        key = item.id or item.item
        if key in items:
            c.add(
                "error",
                "duplicate-checklist-item",
                f"duplicate checklist item '{key}'",
                ("checklist", i),
                "--confirm names items by their text or id",
            )
        items.add(key)


def _host_names(plan: Plan) -> set[str]:
    return plan.targets.host_or_group_names()


def _data_at(data: Any, path: Loc) -> Any:
    for elem in path:
        if isinstance(data, dict) and elem in data:
            data = data[elem]
        elif isinstance(data, list) and isinstance(elem, int) and 0 <= elem < len(data):
            data = data[elem]
        else:
            return None
    return data


def _targets(plan: Plan, steps: list[StepSite], c: _Collector, data: Any = None) -> None:
    t = plan.targets
    dbs, paths, routers = set(t.databases), set(t.paths), t.routers
    hosts = _host_names(plan)
    lenient_hosts = t.inventory is not None

    def need(
        kind: str, name: str | None, path: Loc, pool: set[str], where: str, *, key: bool = False
    ) -> None:
        if name is not None and name not in pool:
            if kind == "host or group" and lenient_hosts:
                return
            c.undefined(kind, name, path, pool, where, key=key)

    for gname, group in t.groups.items():
        gpath: Loc = ("targets", "groups", gname)
        # `web: [web1, web2]` is shorthand for `web: {hosts: [web1, web2]}`.
        hosts_path = gpath if isinstance(_data_at(data, gpath), list) else (*gpath, "hosts")
        for k, h in enumerate(group.hosts):
            need("host", h, (*hosts_path, k), set(t.hosts), "targets.hosts")
        for k, ch in enumerate(group.children):
            need(
                "group",
                ch,
                ("targets", "groups", gname, "children", k),
                set(t.groups),
                "targets.groups",
            )
    for dname, db in t.databases.items():
        need(
            "host", db.host, ("targets", "databases", dname, "host"), set(t.hosts), "targets.hosts"
        )
    for pname, pt in t.paths.items():
        need("host", pt.host, ("targets", "paths", pname, "host"), set(t.hosts), "targets.hosts")
    for rname, router in routers.items():
        if isinstance(router, FlagsRouter):
            need(
                "flag store",
                router.store,
                ("targets", "routers", rname, "store"),
                set(t.flag_stores),
                "targets.flag_stores",
            )
        if isinstance(router, HaproxyRouter):
            for pool in router.cookie_backends:
                need(
                    "pool",
                    pool,
                    ("targets", "routers", rname, "cookie_backends", pool),
                    set(router.pools),
                    f"targets.routers.{rname}.pools",
                    key=True,
                )

    for site in steps:
        s, p = site.step, site.path
        if isinstance(s, SshStep | UploadStep | ReleaseStep) and s.on != "${host}":
            need("host or group", s.on, (*p, "on"), hosts, "targets.hosts or targets.groups")
        for field in ("database",):
            value = getattr(s, field, None)
            if isinstance(value, str):
                need("database", value, (*p, field), dbs, "targets.databases")
        if isinstance(s, BackupStep | RestoreStep):
            need("path target", s.path, (*p, "path"), paths, "targets.paths")
        if isinstance(s, SnapshotStep):
            for k, d in enumerate(s.databases):
                need("database", d, (*p, "databases", k), dbs, "targets.databases")
            for k, pname in enumerate(s.paths):
                need("path target", pname, (*p, "paths", k), paths, "targets.paths")
        if isinstance(s, FlagStep):
            need("flag store", s.store, (*p, "store"), set(t.flag_stores), "targets.flag_stores")
        if isinstance(s, TrafficStep | CanaryStep | BlueGreenStep):
            if s.router not in routers:
                need("router", s.router, (*p, "router"), set(routers), "targets.routers")
                continue
            router = routers[s.router]
            pools = set(getattr(router, "pools", {}) or {})
            if not pools:
                continue
            if isinstance(s, TrafficStep):
                for pool in s.weights:
                    need(
                        "pool",
                        pool,
                        (*p, "weights", pool),
                        pools,
                        f"targets.routers.{s.router}.pools",
                        key=True,
                    )
            elif isinstance(s, CanaryStep):
                need("pool", s.stable, (*p, "stable"), pools, f"targets.routers.{s.router}.pools")
                need("pool", s.canary, (*p, "canary"), pools, f"targets.routers.{s.router}.pools")
            else:
                need("pool", s.active, (*p, "active"), pools, f"targets.routers.{s.router}.pools")
                need("pool", s.idle, (*p, "idle"), pools, f"targets.routers.{s.router}.pools")
    for csite in iter_check_sites(plan):
        chk = csite.check
        if not isinstance(chk, CheckBase):
            continue
        if isinstance(chk, SqlCheck):
            need("database", chk.database, (*csite.path, "database"), dbs, "targets.databases")
        if isinstance(chk, PrometheusCheck) and chk.target:
            need(
                "metrics source",
                chk.target,
                (*csite.path, "target"),
                set(t.metrics),
                "targets.metrics",
            )
        if isinstance(chk, HaproxyCheck):
            r = routers.get(chk.router)
            if r is None:
                need("router", chk.router, (*csite.path, "router"), set(routers), "targets.routers")
            elif not isinstance(r, HaproxyRouter):
                c.add(
                    "error",
                    "wrong-router",
                    f"router '{chk.router}' is not of kind haproxy",
                    (*csite.path, "router"),
                    "a haproxy check reads an haproxy router's socket",
                )


def _roles(plan: Plan, steps: list[StepSite], c: _Collector) -> None:
    roles = set(plan.roles)

    def need(name: str | None, path: Loc) -> None:
        if name is not None and name not in roles:
            c.undefined("role", name, path, roles, "roles")

    for k, r in enumerate(plan.approvals.required):
        need(r, ("approvals", "required", k))
    for i, item in enumerate(plan.checklist):
        need(item.owner, ("checklist", i, "owner"))
    for i, phase in enumerate(plan.phases):
        need(phase.owner, ("phases", i, "owner"))
    for site in steps:
        need(site.step.owner, (*site.path, "owner"))
        if isinstance(site.step, ApproveStep):
            for k, r in enumerate(site.step.roles):
                need(r, (*site.path, "roles", k))
    for csite in iter_check_sites(plan):
        if isinstance(csite.check, CheckBase):
            need(csite.check.owner, (*csite.path, "owner"))
    for name, op in plan.operations.items():
        for k, r in enumerate(op.roles):
            need(r, ("operations", name, "roles", k))
    for k, contact in enumerate(plan.contacts.emergency):
        need(contact.role, ("contacts", "emergency", k, "role"))


def _checks(plan: Plan, c: _Collector) -> None:
    for site in iter_check_sites(plan):
        if isinstance(site.check, CheckUse):
            if site.check.use not in plan.checks:
                c.undefined(
                    "check",
                    site.check.use,
                    (*site.path, "use")
                    if site.path[0] != "checks" or len(site.path) > 2
                    else site.path,
                    plan.checks,
                    "checks",
                )
            elif resolve_check(plan, site.check) is None:
                c.add(
                    "error",
                    "check-cycle",
                    f"check '{site.check.use}' refers to itself",
                    site.path,
                    "a named check must end in a check with a 'source'",
                )


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
        if isinstance(s, MigrateStep) and s.backup:
            need_before("backup", s.backup, (*p, "backup"), site.position, backups)
    for csite in iter_check_sites(plan):
        chk = resolve_check(plan, csite.check) if isinstance(csite.check, CheckUse) else csite.check
        if isinstance(chk, BackupCheck):
            need_before("backup", chk.backup, csite.path, csite.position, backups)
        if isinstance(chk, NoDataLossCheck):
            need_before("snapshot", chk.snapshot, csite.path, csite.position, snapshots)


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


def _window(plan: Plan, c: _Collector) -> None:
    w = plan.window
    total = plan.total_estimate()
    if w.duration is not None and total > w.duration:
        c.add(
            "error",
            "exceeds-window",
            f"phase estimates add up to {format_duration(total)}, more than the "
            f"{format_duration(w.duration)} window",
            ("window", "duration"),
            "shorten phases, move work to a delayed phase ('after:'), or widen the window",
        )
    down = plan.downtime_estimate()
    if w.max_downtime is not None and down > w.max_downtime:
        c.add(
            "error",
            "exceeds-downtime",
            f"downtime phases are estimated at {format_duration(down)}, more than the allowed "
            f"{format_duration(w.max_downtime)}",
            ("window", "max_downtime"),
            "move work out of the downtime phases or raise window.max_downtime",
        )
    if (w.duration is not None or w.max_downtime is not None) and all(
        p.estimate is None for p in plan.phases
    ):
        c.add(
            "warning",
            "no-estimates",
            "no phase has an estimate; the window cannot be checked",
            ("phases",),
            "add 'estimate: 5m' to each phase",
        )
    for i, phase in enumerate(plan.phases):
        if phase.after is not None and i == 0:
            c.add(
                "warning",
                "delayed-first-phase",
                "the first phase is delayed with 'after:'",
                ("phases", 0, "after"),
                "'after' counts from the end of the previous phase",
            )


def _triggers(plan: Plan, c: _Collector) -> None:
    """Rollback triggers name phases that exist; a trigger without a check is manual."""
    names = ", ".join(f"'{p.name}'" for p in plan.phases)
    for i, t in enumerate(plan.rollback_triggers):
        for j, ref in enumerate(t.phases):
            if plan.phase_index(ref) is None:
                c.add(
                    "error",
                    "trigger-phase",
                    f"rollback trigger '{t.name}' names no phase '{ref}'",
                    ("rollback_triggers", i, "phases", j),
                    f"phases: {names} (or their numbers from 1)",
                )
        if t.check is None and t.phases:
            c.add(
                "error",
                "trigger-without-check",
                f"rollback trigger '{t.name}' has phases but no check to evaluate in them",
                ("rollback_triggers", i, "phases"),
                "add a check, or remove 'phases' (a trigger without a check is manual: the "
                "runbook lists it for the operator)",
            )


def _maintenance_steps(steps: Iterable[StepBase]) -> Iterator[MaintenanceStep]:
    for s in steps:
        if isinstance(s, MaintenanceStep):
            yield s


def _maintenance_spans(plan: Plan, c: _Collector) -> set[int]:
    """Check each ``until:`` of a maintenance step; the phases a span covers after its own."""
    covered: set[int] = set()
    for i, phase in enumerate(plan.phases):
        for j, m in enumerate(phase.steps):
            if not isinstance(m, MaintenanceStep) or (m.until is None and not m.keep):
                continue
            path = ("phases", i, "steps", j)
            if m.action != "on":
                c.add(
                    "error",
                    "maintenance-span-off",
                    "'until' and 'keep' apply to 'action: on' only",
                    path,
                    "remove them from the 'off' step",
                )
                continue
            if m.until is None:
                continue
            end = plan.phase_index(m.until)
            if end is None or end < i:
                names = ", ".join(f"'{p.name}'" for p in plan.phases[i:])
                c.add(
                    "error",
                    "maintenance-until",
                    f"maintenance 'until: {m.until}' names no phase at or after '{phase.name}'",
                    (*path, "until"),
                    f"name a phase (or its number from 1): {names}",
                )
                continue
            covered.update(range(i + 1, end + 1))
    return covered


def _maintenance(plan: Plan, c: _Collector) -> None:
    covered = _maintenance_spans(plan, c)
    for i, phase in enumerate(plan.phases):
        ms = list(_maintenance_steps(phase.steps))
        on = [m for m in ms if m.action == "on"]
        if phase.downtime and not on and i not in covered:
            c.add(
                "error",
                "downtime-without-maintenance",
                f"phase '{phase.name}' is a downtime phase with no maintenance step",
                ("phases", i, "downtime"),
                "add a step '{kind: maintenance, action: on}' (tminus turns it off at the end "
                "of the phase, on failure and on rollback), extend an earlier one with "
                "'until: <this phase>', or set downtime: false",
            )
        if on and not phase.downtime:
            c.add(
                "warning",
                "maintenance-not-downtime",
                f"phase '{phase.name}' turns maintenance on but is not marked downtime",
                ("phases", i),
                "set 'downtime: true' so the runbook and the downtime budget count it",
            )
        if phase.downtime and phase.on_failure == "continue":
            c.add(
                "warning",
                "downtime-continue",
                f"downtime phase '{phase.name}' continues on failure",
                ("phases", i, "on_failure"),
                "a failed downtime phase usually needs rollback",
            )
    for site in iter_steps(plan):
        s = site.step
        if (
            isinstance(s, MaintenanceStep)
            and plan.maintenance is None
            and not s.flag_file
            and not (s.enable and s.disable)
        ):
            c.add(
                "error",
                "maintenance-undefined",
                "maintenance step with no way to switch maintenance",
                site.path,
                "declare top-level 'maintenance: {enable: CMD, disable: CMD}' or "
                "'maintenance: {flag_file: PATH}', or give them on the step",
            )


def _notifications(plan: Plan, c: _Collector) -> None:
    channels = set(plan.notifications.channels)
    for i, rule in enumerate(plan.notifications.rules):
        for k, ch in enumerate(rule.channels):
            if ch not in channels:
                c.undefined(
                    "channel",
                    ch,
                    ("notifications", "rules", i, "channels", k),
                    channels,
                    "notifications.channels",
                )
    for site in iter_steps(plan):
        for k, ch in enumerate(getattr(site.step, "channels", []) or []):
            if ch not in channels:
                c.undefined(
                    "channel", ch, (*site.path, "channels", k), channels, "notifications.channels"
                )


def _operations(plan: Plan, c: _Collector) -> None:
    ops = set(plan.operations)
    for i, t in enumerate(plan.troubleshooting):
        if t.operation and t.operation not in ops:
            c.undefined(
                "operation", t.operation, ("troubleshooting", i, "operation"), ops, "operations"
            )
    for i, mw in enumerate(plan.maintenance_windows):
        if mw.operation and mw.operation not in ops:
            c.undefined(
                "operation",
                mw.operation,
                ("maintenance_windows", i, "operation"),
                ops,
                "operations",
            )


def _strings(data: Any, path: Loc = ()) -> Iterator[tuple[Loc, str]]:
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _strings(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _strings(v, (*path, i))


_FLEET = (SshStep, UploadStep, ReleaseStep)
_RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def _fleet(steps: list[StepSite], c: _Collector) -> None:
    """ssh, upload and release: batch and max_fail syntax, release ids and paths, shared
    paths, hooks that could wait forever."""
    for site in steps:
        s, p = site.step, site.path
        if not isinstance(s, _FLEET):
            continue
        bad = batch_problem(s.batch)
        if bad:
            c.add(
                "error",
                "bad-batch",
                bad,
                (*p, "batch"),
                "a count (2), a percentage ('25%') or a ramp ([1, 5, '25%'])",
            )
        bad = max_fail_problem(s.max_fail)
        if bad:
            c.add(
                "error",
                "bad-max-fail",
                bad,
                (*p, "max_fail"),
                "a count of hosts (0: any failure fails) or a percentage ('10%')",
            )
        if s.max_fail_per_batch is not None:
            bad = max_fail_problem(s.max_fail_per_batch, "max_fail_per_batch")
            if bad:
                c.add(
                    "error",
                    "bad-max-fail",
                    bad,
                    (*p, "max_fail_per_batch"),
                    "a count of hosts per batch (0: any failure) or a percentage ('10%')",
                )
        if s.on == "${host}" and not (len(p) >= 2 and p[-2] in ("before_batch", "after_batch")):
            c.add(
                "error",
                "host-outside-hook",
                "on: ${host} means each host of a batch: only a before_batch/after_batch hook "
                "has one",
                (*p, "on"),
                "name a host or group",
            )
        if isinstance(s, SshStep) and s.run_once and s.batch is not None:
            c.add(
                "warning",
                "run-once-batch",
                "run_once runs on one host: 'batch' has no effect",
                (*p, "batch"),
            )
        for field, value in (
            ("dest", getattr(s, "dest", None)),
            ("path", getattr(s, "path", None)),
        ):
            if isinstance(s, UploadStep | ReleaseStep) and value and literal_dotdot(value):
                c.add(
                    "error",
                    "path-escapes-root",
                    f"{s.kind} {field} '{value}' has a '..' component: it could lead outside "
                    "the directory it names",
                    (*p, field),
                    "write the path without '..' (e.g. /srv/app/shared, not /srv/app/current/..)",
                )
        if isinstance(s, ReleaseStep):
            if s.release_id and "${" not in s.release_id and not _RELEASE_ID.match(s.release_id):
                c.add(
                    "error",
                    "bad-release-id",
                    f"release id '{s.release_id}' is not a valid directory name",
                    (*p, "release_id"),
                    "use letters, digits, '.', '_', '+' and '-'",
                )
            if "${" not in s.path and not s.path.startswith("/"):
                c.add(
                    "error",
                    "relative-release-path",
                    f"release path '{s.path}' is not absolute",
                    (*p, "path"),
                    "give the deploy root as an absolute path, e.g. /srv/app",
                )
            for k, entry in enumerate(s.shared):
                e = entry.rstrip("/")
                if not e or e.startswith("/") or ".." in e.split("/"):
                    c.add(
                        "error",
                        "bad-shared-path",
                        f"shared path '{entry}' must be relative to the release, without '..'",
                        (*p, "shared", k),
                    )
        for hook in ("before_batch", "after_batch"):
            for k, h in enumerate(getattr(s, hook, []) or []):
                if isinstance(h, ApproveStep | WaitStep) and not (
                    isinstance(h, WaitStep) and h.until is None
                ):
                    c.add(
                        "warning" if isinstance(h, WaitStep) else "error",
                        "hook-waits",
                        f"a {h.kind} step in {hook} "
                        + (
                            "cannot wait for an approval"
                            if isinstance(h, ApproveStep)
                            else "polls a check between batches"
                        ),
                        (*p, hook, k),
                        "use a check step (http, ssh) or a fixed wait in hooks",
                    )


def _fleet_scopes(steps: list[StepSite]) -> dict[Loc, set[str]]:
    """YAML paths under which per-host (and per-batch) variables exist."""
    scopes: dict[Loc, set[str]] = {}
    for site in steps:
        if isinstance(site.step, _FLEET):
            scopes[site.path] = set(FLEET_HOST_VARIABLES)
            for hook in ("before_batch", "after_batch"):
                for k in range(len(getattr(site.step, hook, []) or [])):
                    scopes[(*site.path, hook, k)] = set(FLEET_HOST_VARIABLES) | set(
                        FLEET_HOOK_VARIABLES
                    )
    return scopes


def _scope_at(scopes: dict[Loc, set[str]], path: Loc) -> set[str]:
    out: set[str] = set()
    if not scopes:
        return out
    for n in range(1, len(path) + 1):
        extra = scopes.get(path[:n])
        if extra:
            out |= extra
    return out


def _variables(
    plan: Plan, data: Any, c: _Collector, scopes: dict[Loc, set[str]] | None = None
) -> None:
    if data is None:
        return
    known = set(plan.variables) | set(plan.secrets) | set(BUILTIN_VARIABLES)
    step_ids = {s.step.id for s in iter_steps(plan) if s.step.id}
    for path, text in _strings(data):
        if "${" not in text:
            continue
        op_params: set[str] = set()
        if path and path[0] == "operations" and len(path) > 1:
            op = plan.operations.get(str(path[1]))
            op_params = set(op.params) if op else set()
        local = _scope_at(scopes or {}, path)
        for ref in references(text):
            if ref.namespace == "":
                if ref.name not in known and ref.name not in op_params and ref.name not in local:
                    hint = did_you_mean(ref.name, known | op_params) or (
                        "declare it under 'variables:' or 'secrets:'"
                    )
                    c.add(
                        "error",
                        "undefined-variable",
                        f"undefined variable '{ref.name}'",
                        path,
                        hint,
                    )
            elif ref.namespace == "artifact":
                step = ref.name.partition(".")[0]
                if step not in step_ids:
                    c.add(
                        "error",
                        "undefined-artifact",
                        f"no step with id '{step}' for '{ref.text}'",
                        path,
                        did_you_mean(step, step_ids),
                    )
            elif ref.namespace in ("env", "file"):
                if not ref.name:
                    c.add("error", "bad-reference", f"'{ref.text}' names nothing", path)
            else:
                c.add(
                    "error",
                    "bad-reference",
                    f"unknown reference '{ref.text}'",
                    path,
                    "use ${name}, ${env:NAME}, ${file:PATH} or ${artifact:STEP.KEY}",
                )
    for name, value in plan.secrets.items():
        refs = references(value)
        if not refs or all(r.namespace == "" for r in refs):
            c.add(
                "warning",
                "secret-in-plan",
                f"secret '{name}' is written in the plan in clear text",
                ("secrets", name),
                "use ${env:NAME} or ${file:PATH} so the value stays out of the plan",
            )
        elif any(r.namespace == "env" and r.name.partition(":-")[2] for r in refs):
            c.add(
                "warning",
                "secret-default-in-plan",
                f"secret '{name}' has a default value written in the plan",
                ("secrets", name),
                "the default is stored with every deploy's plan snapshot; keep only "
                "rehearsal values there, or drop the default (${env:NAME})",
            )


_DESTRUCTIVE = (MigrateStep, SqlStep, RestoreStep, ReleaseStep, RunStep, SshStep)


def _warnings(plan: Plan, steps: list[StepSite], c: _Collector) -> None:
    backups_seen = False
    for site in steps:
        s = site.step
        if site.position.section != 0 or site.position.phase < 0:
            continue
        if isinstance(s, BackupStep) and s.database:
            backups_seen = True
        if isinstance(s, MigrateStep) and not backups_seen:
            c.add(
                "warning",
                "migrate-without-backup",
                "migration with no database backup before it",
                site.path,
                "add a 'backup' step for this database earlier in the plan",
            )
        if isinstance(s, CanaryStep):
            weights = [w.weight for w in s.steps]
            if weights != sorted(weights):
                c.add(
                    "warning",
                    "canary-order",
                    "canary weights do not increase",
                    (*site.path, "steps"),
                )
            # With `promote: false` the last weight is held on purpose for a later phase.
            if weights[-1] != 100 and s.promote:
                c.add(
                    "warning",
                    "canary-not-full",
                    "the last canary step is not 100%",
                    (*site.path, "steps"),
                    "promotion sends all traffic to the canary anyway",
                )
    if plan.risk in ("high", "critical") and not plan.approvals.required:
        c.add(
            "warning",
            "risky-no-approval",
            f"a {plan.risk}-risk plan needs no approval",
            ("risk",),
            "add 'approvals: {required: [ROLE]}'",
        )
    for i, phase in enumerate(plan.phases):
        destructive = any(isinstance(s, _DESTRUCTIVE) for s in phase.steps)
        has_undo = (
            phase.rollback
            or any(s.undo for s in phase.steps)
            or any(isinstance(s, MigrateStep | ReleaseStep | MaintenanceStep) for s in phase.steps)
        )
        if destructive and not has_undo and phase.on_failure == "rollback" and phase.after is None:
            c.add(
                "warning",
                "no-rollback",
                f"phase '{phase.name}' changes things but has nothing to roll back with",
                ("phases", i),
                "add 'rollback:' steps or 'undo:' on the steps, or set on_failure: pause",
            )
        if phase.estimate is None and plan.window.duration is not None:
            c.add(
                "warning",
                "no-estimate",
                f"phase '{phase.name}' has no estimate",
                ("phases", i),
                "the T-timeline and window check assume 0 for it",
            )
