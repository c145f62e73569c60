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

import ast
import json
import re
import shlex
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tminus.errors import PlanError

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


class InventoryError(PlanError):
    """An inventory cannot be read; the message names file:line where it can."""


@dataclass
class ResolvedHost:
    """A host with its connection settings and all its resolved variables."""

    name: str
    address: str
    port: int = 22
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    become: bool | str = False
    local: bool = False
    vars: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)

    def connection(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "identity_file": self.identity_file,
            "known_hosts": self.known_hosts,
            "become": self.become,
            "local": self.local,
        }

    def target(self) -> TargetHost:
        """The plan model of this host (what :class:`tminus.hosts.ssh.SshHost` connects with)."""
        from tminus.plan.targets import Host as TargetHost

        return TargetHost(**self.connection(), vars=dict(self.vars))


@dataclass
class _Group:
    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    priority: int = 1


@dataclass
class _Raw:
    """One parsed inventory source before resolution."""

    groups: dict[str, _Group] = field(default_factory=dict)
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # in insertion order
    warnings: list[str] = field(default_factory=list)

    def group(self, name: str) -> _Group:
        g = self.groups.get(name)
        if g is None:
            g = self.groups[name] = _Group(name)
        return g

    def add_host(self, group: str, host: str, variables: Mapping[str, Any]) -> None:
        self.host_vars.setdefault(host, {}).update(variables)
        g = self.group(group)
        if host not in g.hosts:
            g.hosts.append(host)

    def add_child(self, parent: str, child: str) -> None:
        g = self.group(parent)
        self.group(child)
        if child not in g.children:
            g.children.append(child)

    def set_group_var(self, group: str, key: str, value: Any) -> None:
        g = self.group(group)
        if key == "ansible_group_priority":
            try:
                g.priority = int(value)
            except (TypeError, ValueError):
                self.warnings.append(f"group {group}: ansible_group_priority {value!r} is no int")
            return  # as in Ansible: it orders groups, it is no variable of their hosts
        g.vars[key] = value


@dataclass
class Inventory:
    """Resolved hosts and groups (``all`` and ``ungrouped`` included)."""

    hosts: dict[str, ResolvedHost] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)  # group -> sorted host names
    children: dict[str, list[str]] = field(default_factory=dict)  # group -> direct children
    direct_hosts: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def select(self, pattern: str) -> list[ResolvedHost]:
        """Hosts of a group or one host, by name."""
        if pattern in self.groups:
            return [self.hosts[h] for h in self.groups[pattern]]
        if pattern in self.hosts:
            return [self.hosts[pattern]]
        known = ", ".join(sorted(self.groups))
        raise InventoryError(
            f"no host or group named '{pattern}'", hint=f"groups: {known or '(none)'}"
        )

    def to_ansible(self, only: Iterable[str] | None = None) -> dict[str, Any]:
        """The shape of ``ansible-inventory --list``; ``only`` limits ``_meta.hostvars``."""
        shown = set(self.hosts if only is None else only)
        out: dict[str, Any] = {
            "_meta": {
                "hostvars": {
                    n: {**h.vars, "tminus": h.connection()}
                    for n, h in sorted(self.hosts.items())
                    if n in shown
                }
            }
        }
        for g in sorted(self.groups, key=lambda n: (n != "all", n)):
            entry: dict[str, Any] = {}
            if self.children.get(g):
                entry["children"] = sorted(self.children[g])
            if self.direct_hosts.get(g) and g != "all":  # all's hosts show as ungrouped
                entry["hosts"] = sorted(self.direct_hosts[g])
            if entry:
                out[g] = entry
        return out


# --------------------------------------------------------------------------- host patterns

_RANGE = re.compile(r"\[([^\[\]:]*):([^\[\]:]*)(?::([^\[\]:]*))?\]")


def expand_host_pattern(pattern: str) -> list[str]:
    """Expand Ansible ranges: ``web[01:03].x`` → web01.x web02.x web03.x; ``db-[a:c]``."""
    m = _RANGE.search(pattern)
    if m is None:
        return [pattern]
    head, tail = pattern[: m.start()], pattern[m.end() :]
    beg, end, step_s = m.group(1), m.group(2), m.group(3)
    step = int(step_s) if step_s else 1
    if not end:
        raise ValueError(f"range end value missing in '{pattern}'")
    if step < 1:
        raise ValueError(f"range step must be positive in '{pattern}'")
    if not beg:
        beg = "0"
    items: list[str]
    if beg.isdigit() and end.isdigit():
        width = len(beg) if beg.startswith("0") else 0
        if int(beg) > int(end):
            raise ValueError(f"range start is after its end in '{pattern}'")
        items = [str(i).zfill(width) for i in range(int(beg), int(end) + 1, step)]
    elif len(beg) == 1 and len(end) == 1 and beg.isalpha() and end.isalpha():
        letters = string.ascii_letters
        i, j = letters.index(beg), letters.index(end)
        if i > j:
            raise ValueError(f"range start is after its end in '{pattern}'")
        items = list(letters[i : j + 1 : step])
    else:
        raise ValueError(f"cannot expand range [{m.group(0)[1:-1]}] in '{pattern}'")
    out: list[str] = []
    for item in items:
        out.extend(expand_host_pattern(head + item + tail))
    return out


def _split_port(token: str) -> tuple[str, int | None]:
    """``host:2222`` → (host, 2222), ``web[01:02]:2222`` → (web[01:02], 2222); IPv6
    addresses are left alone (``[::1]:22`` is ::1 port 22)."""
    ranged = re.fullmatch(r"(.*\]):(\d+)", token)
    if ranged:
        host = ranged.group(1)
        ranges = list(_RANGE.finditer(host))
        if ranges and all(m.group(2) for m in ranges) and ":" not in _RANGE.sub("", host):
            return host, int(ranged.group(2))  # a range, then a port
    if token.count(":") == 1 or (token.startswith("[") and "]:" in token and ":" in token[1:]):
        host, _, port = token.rpartition(":")
        if port.isdigit():
            if host.startswith("[") and host.endswith("]") and ":" in host:
                host = host[1:-1]  # [::1]:22
            return host, int(port)
        if token.endswith(":"):
            raise ValueError(f"host pattern '{token}' ends in ':' (reserved for a port)")
    return token, None


# --------------------------------------------------------------------------- INI

_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_GROUPNAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")


def _ini_value(text: str) -> Any:
    """Ansible runs INI values through ``ast.literal_eval``; what does not parse stays a str."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, complex | bytes) or value is Ellipsis:
        return text
    return value


def _parse_ini(path: Path, text: str) -> _Raw:
    raw = _Raw()
    raw.group("all")
    pending: dict[str, dict[str, Any]] = {}
    group, state = "ungrouped", "hosts"
    raw.group("ungrouped")
    for lineno, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{lineno}"
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        m = _SECTION.match(line)
        if m:
            group, state = m.group(1), m.group(2) or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise InventoryError(f"{where}: section [{group}:{state}] has unknown type")
            if group not in raw.groups:
                if state == "vars" and group not in pending:
                    pending[group] = {"line": lineno, "state": "vars", "parents": []}
                raw.group(group)
            if group in pending and state != "vars":
                decl = pending.pop(group)
                for parent in decl["parents"]:
                    raw.add_child(parent, group)
            continue
        if line.startswith("[") and line.endswith("]"):
            raise InventoryError(
                f"{where}: invalid section '{line}'",
                hint="a section is [group], [group:vars] or [group:children], without spaces",
            )
        if state == "hosts":
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError as exc:
                raise InventoryError(f"{where}: cannot parse host line: {exc}") from None
            if not tokens:
                continue
            variables: dict[str, Any] = {}
            for tok in tokens[1:]:
                if "=" not in tok:
                    raise InventoryError(
                        f"{where}: expected key=value after the host name, got '{tok}'"
                    )
                k, _, v = tok.partition("=")
                variables[k] = _ini_value(v)
            try:
                pattern, port = _split_port(tokens[0])
                names = expand_host_pattern(pattern)
            except ValueError as exc:
                raise InventoryError(f"{where}: {exc}") from None
            if port is not None:
                variables["ansible_port"] = port
            for name in names:
                raw.add_host(group, name, variables)
        elif state == "vars":
            if "=" not in line:
                raise InventoryError(f"{where}: expected key=value in [{group}:vars], got '{line}'")
            k, _, v = line.partition("=")
            raw.set_group_var(group, k.strip(), _ini_value(v.strip()))
        else:
            gm = _GROUPNAME.match(line)
            if gm is None:
                raise InventoryError(f"{where}: expected a group name, got '{line}'")
            child = gm.group(1)
            if child not in raw.groups:
                decl = pending.setdefault(child, {"line": lineno, "state": "children"})
                decl.setdefault("parents", []).append(group)
            else:
                raw.add_child(group, child)
    for name, decl in pending.items():
        where = f"{path}:{decl['line']}"
        if decl["state"] == "vars":
            raise InventoryError(f"{where}: section [{name}:vars] is for undefined group '{name}'")
        raise InventoryError(
            f"{where}: section [{decl['parents'][-1]}:children] names undefined group '{name}'",
            hint=f"declare it with a [{name}] or [{name}:children] section",
        )
    return raw


# --------------------------------------------------------------------------- YAML


def _load_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise InventoryError(f"{where}: invalid YAML: {problem}") from None


def _parse_yaml(path: Path, text: str) -> _Raw:
    raw = _Raw()
    raw.group("all")
    raw.group("ungrouped")
    data = _load_yaml(path, text)
    if data is None:
        return raw
    if not isinstance(data, dict):
        raise InventoryError(f"{path}: a YAML inventory is a mapping of groups (like 'all:')")

    def section(gname: str, gdata: dict[str, Any], key: str) -> dict[str, Any]:
        value = gdata.get(key)
        if isinstance(value, str):
            return {value: None}
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InventoryError(
                f"{path}: '{key}' of group '{gname}' must be a mapping, not {type(value).__name__}"
            )
        return value

    def parse_group(gname: str, gdata: Any) -> None:
        if not isinstance(gdata, dict | type(None)):
            raw.warnings.append(f"{path}: skipping '{gname}': not a valid group definition")
            return
        raw.group(gname)
        if gdata is None:
            return
        for key in gdata:
            if key not in ("vars", "children", "hosts"):
                raw.warnings.append(
                    f"{path}: skipping unexpected key '{key}' in group '{gname}' "
                    "(only vars, children and hosts are valid)"
                )
        for k, v in section(gname, gdata, "vars").items():
            raw.set_group_var(gname, str(k), v)
        for child, cdata in section(gname, gdata, "children").items():
            parse_group(str(child), cdata)
            raw.add_child(gname, str(child))
        for pattern, hvars in section(gname, gdata, "hosts").items():
            if hvars is not None and not isinstance(hvars, dict):
                raise InventoryError(f"{path}: vars of host '{pattern}' must be a mapping")
            try:
                host, port = _split_port(str(pattern))
                names = expand_host_pattern(host)
            except ValueError as exc:
                raise InventoryError(f"{path}: group '{gname}': {exc}") from None
            variables = dict(hvars or {})
            if port is not None:
                variables["ansible_port"] = port
            for name in names:
                raw.add_host(gname, name, variables)

    for gname, gdata in data.items():
        parse_group(str(gname), gdata)
    return raw


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
