"""Validation of names and references: duplicate phases, step ids and checklist items, and
the targets, roles, checks, notification channels and operations a plan names are defined."""

from __future__ import annotations

from typing import Any

from tminus.plan._validate_base import _Collector
from tminus.plan.checks import (
    CheckBase,
    CheckUse,
    HaproxyCheck,
    KubernetesCheck,
    PrometheusCheck,
    SqlCheck,
)
from tminus.plan.model import Plan
from tminus.plan.problems import Loc
from tminus.plan.steps import (
    ApproveStep,
    BackupStep,
    BlueGreenStep,
    CanaryStep,
    FlagStep,
    KubernetesStep,
    ReleaseStep,
    RestoreStep,
    SnapshotStep,
    SshStep,
    TrafficStep,
    UploadStep,
)
from tminus.plan.targets import FlagsRouter, HaproxyRouter
from tminus.plan.walk import StepSite, iter_check_sites, resolve_check


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
    kube = set(t.kubernetes)
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
        if isinstance(s, KubernetesStep):
            need("kubernetes target", s.target, (*p, "target"), kube, "targets.kubernetes")
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
        if isinstance(chk, KubernetesCheck):
            need(
                "kubernetes target", chk.target, (*csite.path, "target"), kube, "targets.kubernetes"
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


def _operations(plan: Plan, c: _Collector) -> None:
    ops = set(plan.operations)
    for i, t in enumerate(plan.troubleshooting):
        if t.operation and t.operation not in ops:
            c.undefined(
                "operation", t.operation, ("troubleshooting", i, "operation"), ops, "operations"
            )
    watch = plan.watch
    if watch is not None and watch.operation and watch.operation not in ops:
        c.undefined("operation", watch.operation, ("watch", "operation"), ops, "operations")
    for i, mw in enumerate(plan.maintenance_windows):
        if mw.operation and mw.operation not in ops:
            c.undefined(
                "operation",
                mw.operation,
                ("maintenance_windows", i, "operation"),
                ops,
                "operations",
            )
