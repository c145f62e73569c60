"""Ansible YAML (and JSON) inventories, and the YAML loader of vars files, for
:mod:`tminus.hosts.inventory`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tminus.hosts._inventory_model import InventoryError, _Raw, _split_port, expand_host_pattern


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
