"""The report's masking: everything it shows passes through the plan's secrets.

The store's texts were masked when they were recorded; the report masks them again with the
plan's secrets as they resolve here (``${env:…}``, ``${file:…}``: a secret whose source is not
available on this machine is skipped, and its recorded form was already masked) and the
password of every URL (:func:`tminus.plan.interpolate.mask_url_passwords`, which the
:class:`~tminus.plan.interpolate.Masker` always applies)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tminus.plan.interpolate import Masker, ResolveError, Resolver

if TYPE_CHECKING:
    from tminus.plan.model import Plan

__all__ = ["plan_masker"]


def plan_masker(plan: Plan | None, plan_path: str) -> Masker:
    """A masker with every secret of ``plan`` that resolves here, each on its own (one
    unresolvable secret does not keep the others unmasked)."""
    masker = Masker()
    if plan is None:
        return masker
    base = Path(plan_path).expanduser().resolve().parent
    builtins: dict[str, Any] = {
        "plan_name": plan.name,
        "plan_version": plan.version or "",
        "environment": plan.environment,
        "plan_dir": str(base),
    }
    for name, raw in plan.secrets.items():
        try:
            r = Resolver.for_plan({}, {name: raw}, base_dir=base, builtins=builtins)
        except (ResolveError, OSError, ValueError):
            continue
        masker.secrets |= r.masker.secrets
    return masker
