"""The model of :mod:`tminus.hosts.inventory`: a parsed inventory source (groups, host vars),
the resolved :class:`Inventory` and :class:`ResolvedHost`, and Ansible host patterns
(``web[01:03]`` ranges, ``host:port``)."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tminus.errors import PlanError

if TYPE_CHECKING:
    from tminus.plan.targets import Host as TargetHost


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
