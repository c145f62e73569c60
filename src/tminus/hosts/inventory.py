"""Ansible inventories, read unchanged: INI and YAML files, ``group_vars/`` and ``host_vars/``
beside them, resolved the way Ansible resolves them; then merged with a plan's own
``targets.hosts`` / ``targets.groups``.

Variable precedence (lowest first), as Ansible's ``VariableManager`` with default settings:

1. the ``all`` group's vars from the inventory file;
2. other groups' vars from the inventory file, in ``(depth, ansible_group_priority, name)``
   order, so a child group (deeper) beats its parent;
3. ``group_vars/all``; 4. ``group_vars/<group>`` in the same group order;
5. host vars from the inventory file (``host:2222`` sets ``ansible_port``);
6. ``host_vars/<host>``;
7. the plan's own group vars (same order), then the plan's own host vars: plan wins.

Values are replaced per top-level key (Ansible's ``hash_behaviour=replace``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tminus.hosts._inventory_ini import _parse_ini
from tminus.hosts._inventory_model import (
    Inventory,
    InventoryError,
    ResolvedHost,
    _Group,
    _Raw,
    expand_host_pattern,
)
from tminus.hosts._inventory_yaml import _load_yaml, _parse_yaml

if TYPE_CHECKING:
    from tminus.plan.targets import Host as TargetHost
    from tminus.plan.targets import Targets

__all__ = [
    "Inventory",
    "InventoryError",
    "ResolvedHost",
    "expand_host_pattern",
    "load_inventory",
    "resolve",
]

_YAML_SUFFIXES = (".yml", ".yaml", ".json")
_VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")

# --------------------------------------------------------------------------- group_vars / host_vars


def _vars_files(base: Path, name: str) -> list[Path]:
    """Files for ``name`` under ``base``: ``name``, ``name.yml|yaml|json``, or ``name/**``."""
    found: list[Path] = []
    for suffix in _VARS_SUFFIXES:
        p = base / f"{name}{suffix}"
        if p.is_file():
            found.append(p)
    d = base / name
    if d.is_dir():
        for p in sorted(d.rglob("*")):
            if p.is_file() and not p.name.startswith(".") and p.suffix in _VARS_SUFFIXES:
                found.append(p)
    return found


def _read_vars(base: Path, name: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for p in _vars_files(base, name):
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise InventoryError(f"{p}: cannot read: {exc.strerror or exc}") from None
        data = json.loads(text) if p.suffix == ".json" else _load_yaml(p, text)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise InventoryError(f"{p}: a vars file must be a mapping")
        merged.update({str(k): v for k, v in data.items()})
    return merged


# --------------------------------------------------------------------------- resolution


def _graph(groups: Mapping[str, _Group]) -> tuple[dict[str, int], dict[str, set[str]]]:
    """Each group's depth (longest distance from ``all``, as Ansible's ``Group.depth``) and
    ancestors (the groups that include it, directly or through children)."""
    parents: dict[str, set[str]] = {g: set() for g in groups}
    for grp in groups.values():
        for ch in grp.children:
            parents[ch].add(grp.name)
    depth: dict[str, int] = {"all": 0}

    def walk(g: str, seen: frozenset[str]) -> int:
        if g not in depth:
            if g in seen:
                raise InventoryError(f"group '{g}' is its own ancestor (children loop)")
            depth[g] = 1 + max((walk(p, seen | {g}) for p in parents[g]), default=0)
        return depth[g]

    ancestors: dict[str, set[str]] = {}
    for g in groups:
        walk(g, frozenset())
        seen: set[str] = set()
        todo = list(parents[g])
        while todo:
            p = todo.pop()
            if p not in seen:
                seen.add(p)
                todo.extend(parents[p])
        ancestors[g] = seen
    return depth, ancestors


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "1", "true", "y", "t")
    return bool(value)


def _connection_from_vars(name: str, hv: Mapping[str, Any]) -> ResolvedHost:
    port_raw = hv.get("ansible_port", hv.get("ansible_ssh_port", 22))
    try:
        port = int(port_raw)
    except (TypeError, ValueError):
        raise InventoryError(f"host '{name}': ansible_port {port_raw!r} is not a number") from None
    become: bool | str = False
    if _truthy(hv.get("ansible_become", hv.get("ansible_sudo", False))):
        user = hv.get("ansible_become_user")
        become = str(user) if user and str(user) != "root" else True

    def opt(*keys: str) -> str | None:
        for k in keys:
            if hv.get(k) not in (None, ""):
                return str(hv[k])
        return None

    return ResolvedHost(
        name=name,
        address=opt("ansible_host", "ansible_ssh_host") or name,
        port=port,
        user=opt("ansible_user", "ansible_ssh_user"),
        identity_file=opt("ansible_ssh_private_key_file", "ansible_private_key_file"),
        known_hosts=opt("tminus_known_hosts"),
        become=become,
        local=str(hv.get("ansible_connection", "")) == "local",
    )


def load_inventory(path: str | Path) -> _Raw:
    """Parse one inventory file (format from its suffix, as Ansible's plugins pick it)."""
    p = Path(path)
    if p.is_dir():
        raise InventoryError(f"{p}: is a directory; give the inventory file")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(f"{p}: no such inventory file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{p}: cannot read inventory: {exc}") from None
    if p.suffix in _YAML_SUFFIXES:
        return _parse_yaml(p, text)
    return _parse_ini(p, text)


def resolve(inventory: str | Path | None = None, targets: Targets | None = None) -> Inventory:
    """Read ``inventory`` (optional), merge ``targets`` (optional, wins), resolve everything."""
    raw = load_inventory(inventory) if inventory is not None else _Raw()
    raw.group("all")
    raw.group("ungrouped")
    base = Path(inventory).parent if inventory is not None else None
    plan_group_vars: dict[str, dict[str, Any]] = {}
    plan_hosts: dict[str, TargetHost] = {}
    if targets is not None:
        plan_hosts = dict(targets.hosts)
        for hname in targets.hosts:
            raw.host_vars.setdefault(hname, {})
        for gname, pg in targets.groups.items():
            target_group = raw.group(gname)
            # The plan's definition of a group replaces the inventory's membership.
            target_group.hosts = list(dict.fromkeys(pg.hosts))
            for h in target_group.hosts:
                raw.host_vars.setdefault(h, {})
            for ch in pg.children:
                if ch not in raw.groups and ch not in targets.groups:
                    raise InventoryError(
                        f"targets.groups.{gname}: child group '{ch}' is not defined",
                        hint="define it in targets.groups or in the inventory",
                    )
            target_group.children = list(dict.fromkeys(pg.children))
            plan_group_vars[gname] = dict(pg.vars)
            for ch in target_group.children:
                raw.group(ch)
    groups = raw.groups
    # Ansible's reconcile: top-level groups are children of all; hosts in no group: ungrouped.
    member: dict[str, set[str]] = {h: set() for h in raw.host_vars}
    for grp in groups.values():
        for h in grp.hosts:
            member.setdefault(h, set()).add(grp.name)
    ungrouped = groups["ungrouped"]
    ungrouped.hosts = [h for h in member if not (member[h] - {"all", "ungrouped"})]
    for grp in groups.values():
        for h in grp.hosts:
            raw.host_vars.setdefault(h, {})
    groups["all"].children = []
    parented = {ch for grp in groups.values() for ch in grp.children}
    groups["all"].children = sorted(g for g in groups if g != "all" and g not in parented)
    try:
        depth, ancestors = _graph(groups)
    except InventoryError as exc:
        raise InventoryError(f"{inventory or 'targets.groups'}: {exc}") from None

    def order(names: Iterable[str]) -> list[str]:
        return sorted(names, key=lambda n: (depth[n], groups[n].priority, n))

    file_group_vars: dict[str, dict[str, Any]] = {}
    file_host_vars: dict[str, dict[str, Any]] = {}
    if base is not None:
        for gname in groups:
            file_group_vars[gname] = _read_vars(base / "group_vars", gname)
        for hname in raw.host_vars:
            file_host_vars[hname] = _read_vars(base / "host_vars", hname)

    inv = Inventory(warnings=list(raw.warnings))
    if inventory is not None:
        inv.sources.append(str(inventory))
    for hname, inline in raw.host_vars.items():
        direct = {grp.name for grp in groups.values() if hname in grp.hosts}
        all_groups = set(direct)
        for g in direct:
            all_groups |= ancestors[g]
        all_groups.discard("all")
        sorted_groups = order(all_groups)
        hv: dict[str, Any] = {}
        hv.update(groups["all"].vars)
        for g in sorted_groups:
            hv.update(groups[g].vars)
        hv.update(file_group_vars.get("all", {}))
        for g in sorted_groups:
            hv.update(file_group_vars.get(g, {}))
        hv.update(inline)
        hv.update(file_host_vars.get(hname, {}))
        hv.update(plan_group_vars.get("all", {}))
        for g in sorted_groups:
            hv.update(plan_group_vars.get(g, {}))
        hv.pop("ansible_group_priority", None)  # from group_vars/ or the plan: not a host var
        host = _connection_from_vars(hname, hv)
        method = hv.get("ansible_become_method")
        if host.become and method not in (None, "sudo"):
            inv.warnings.append(f"host '{hname}': become method '{method}' used as sudo")
        if hname in plan_hosts:
            ph = plan_hosts[hname]
            for fname in ph.model_fields_set - {"vars"}:
                setattr(host, fname, getattr(ph, fname))
            host.address = host.address or hname
            hv.update(ph.vars)
        host.vars = hv
        host.groups = sorted(all_groups | {"all"})
        inv.hosts[hname] = host
    for gname, grp in groups.items():
        members = set(grp.hosts)
        for other in groups:
            if gname in ancestors[other]:
                members |= set(groups[other].hosts)
        if gname == "all":
            members = set(inv.hosts)
        inv.groups[gname] = sorted(members)
        inv.children[gname] = sorted(grp.children)
        inv.direct_hosts[gname] = sorted(set(grp.hosts))
    return inv
