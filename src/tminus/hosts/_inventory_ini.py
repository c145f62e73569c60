"""Ansible INI inventories (``[group]``, ``[group:vars]``, ``[group:children]`` sections), for
:mod:`tminus.hosts.inventory`."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

from tminus.hosts._inventory_model import InventoryError, _Raw, _split_port, expand_host_pattern

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
