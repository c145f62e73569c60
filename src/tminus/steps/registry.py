"""The registry of step kinds: built-ins, then third-party ones from the ``tminus.steps``
entry-point group. It never guesses: an unknown kind is an error naming the known ones."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points

from tminus.errors import PlanError
from tminus.steps.base import StepKind

__all__ = ["BUILTIN_MODULES", "get_kind", "implemented_kinds"]

#: kind → module implementing it (imported on first use).
BUILTIN_MODULES: dict[str, str] = {
    "run": "tminus.steps.run",
    "http": "tminus.steps.http",
    "sql": "tminus.steps.sql",
    "wait": "tminus.steps.wait",
    "approve": "tminus.steps.approve",
    "maintenance": "tminus.steps.maintenance",
    "notify": "tminus.steps.notify",
    "backup": "tminus.steps.backup",
    "restore": "tminus.steps.restore",
    "verify_backup": "tminus.steps.verify_backup",
    "snapshot": "tminus.steps.snapshot",
    "migrate": "tminus.steps.migrate",
    "ssh": "tminus.steps.ssh",
    "upload": "tminus.steps.upload",
    "release": "tminus.steps.release",
    "traffic": "tminus.steps.traffic",
    "flag": "tminus.steps.flag",
    "canary": "tminus.steps.canary",
    "blue_green": "tminus.steps.blue_green",
}

_cache: dict[str, StepKind] = {}


def _entry_point_kinds() -> dict[str, str]:
    out: dict[str, str] = {}
    for ep in entry_points(group="tminus.steps"):
        out[ep.name] = ep.value
    return out


def implemented_kinds() -> set[str]:
    return set(BUILTIN_MODULES) | set(_entry_point_kinds())


def get_kind(kind: str) -> StepKind:
    if kind in _cache:
        return _cache[kind]
    target = BUILTIN_MODULES.get(kind)
    if target is not None:
        impl: StepKind = import_module(target).KIND
    else:
        eps = _entry_point_kinds()
        if kind not in eps:
            raise PlanError(
                f"step kind '{kind}' is not implemented in this version of tminus",
                hint="implemented kinds: " + ", ".join(sorted(implemented_kinds())),
            )
        mod, _, attr = eps[kind].partition(":")
        impl = getattr(import_module(mod), attr or "KIND")
    _cache[kind] = impl
    return impl
