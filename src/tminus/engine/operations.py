"""Operations (Octopus calls them runbooks): named procedures in the plan file, run on the
same durable engine as deployments.

An operation runs as a deploy of a *derived plan*: the plan's targets, secrets, variables,
checks, roles, maintenance and notifications, plus one phase holding the operation's steps
and checks. Its parameters become variables. The derived plan's name is
``<plan>.op.<operation>``, so the engine's (plan, environment) lock is a lock per operation,
and `tminus status/log/resume/abort` work on it like on any deploy.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import yaml

from tminus.errors import PlanError
from tminus.plan.model import Operation, Plan, parent_plan_name
from tminus.plan.problems import did_you_mean

__all__ = [
    "ParamValue",
    "check_role",
    "derived_plan",
    "get_operation",
    "parent_plan_name",
    "parse_params",
]

ParamValue = str | int | float | bool

_SHARED = (
    "tminus",
    "version",
    "environment",
    "owner",
    "risk",
    "roles",
    "variables",
    "secrets",
    "maintenance",
    "targets",
    "checks",
    "notifications",
)
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


def get_operation(plan: Plan, name: str) -> Operation:
    op = plan.operations.get(name)
    if op is None:
        names = sorted(plan.operations)
        raise PlanError(
            f"plan '{plan.name}' has no operation '{name}'",
            hint=did_you_mean(name, names)
            or ("operations: " + ", ".join(names) if names else "the plan declares no operations"),
        )
    return op


def parse_params(op_name: str, op: Operation, given: dict[str, str]) -> dict[str, ParamValue]:
    """Typed parameter values: given ones converted, defaults filled in, required enforced."""
    out: dict[str, ParamValue] = {}
    for key, raw in given.items():
        spec = op.params.get(key)
        if spec is None:
            hint = did_you_mean(key, op.params) or (
                "parameters: " + ", ".join(op.params) if op.params else "it takes no parameters"
            )
            raise PlanError(f"operation '{op_name}' has no parameter '{key}'", hint=hint)
        try:
            out[key] = _convert(raw, spec.type)
        except ValueError:
            raise PlanError(
                f"parameter '{key}' of '{op_name}' must be of type {spec.type}, got {raw!r}"
            ) from None
    for key, spec in op.params.items():
        if key in out:
            continue
        if spec.default is not None:
            out[key] = spec.default
        elif spec.required:
            raise PlanError(
                f"operation '{op_name}' needs parameter '{key}'",
                hint=f"--param {key}=VALUE"
                + (f" ({spec.description})" if spec.description else ""),
            )
    return out


def _convert(raw: str, kind: str) -> ParamValue:
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "bool":
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(raw)
    return raw


def check_role(plan: Plan, op_name: str, op: Operation, person: str) -> None:
    """Only people in one of the operation's roles may run it (when the roles list people)."""
    if not op.roles:
        return
    allowed = {p for r in op.roles for p in plan.roles[r].people}
    if allowed and person not in allowed:
        raise PlanError(
            f"{person} may not run '{op_name}': it is for {', '.join(op.roles)}",
            hint="people: " + ", ".join(sorted(allowed)) + " (use --as NAME)",
        )


def derived_plan(
    plan: Plan,
    op_name: str,
    params: dict[str, ParamValue],
    *,
    given: Collection[str] | None = None,
) -> str:
    """The YAML text of the plan an operation runs as (named ``<plan>.op.<operation>``).

    The values of the parameters in ``given`` (default: all), typed by an operator with
    ``--param``, are literal text: a ``${`` in them is written ``$${`` in the derived plan,
    so it is never read as a reference (no ``${env:…}`` or ``${file:…}`` on their say-so)."""
    op = get_operation(plan, op_name)
    data: dict[str, Any] = plan.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude_defaults=True
    )
    out: dict[str, Any] = {k: data[k] for k in _SHARED if k in data}
    out["name"] = f"{plan.name}.op.{op_name}"
    out["description"] = op.description or f"operation {op_name} of plan {plan.name}"
    literal = set(params) if given is None else set(given)
    out["variables"] = {
        **data.get("variables", {}),
        **{
            k: v.replace("${", "$${") if k in literal and isinstance(v, str) else v
            for k, v in params.items()
        },
    }
    opd = op.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    phase: dict[str, Any] = {"name": op_name, "steps": opd.get("steps", [])}
    if opd.get("checks"):
        phase["verify"] = opd["checks"]
    if op.estimate is not None:
        phase["estimate"] = opd["estimate"]
    if op.on_failure != "rollback":
        phase["on_failure"] = op.on_failure
    out["phases"] = [phase]
    return yaml.safe_dump(out, sort_keys=False, allow_unicode=True)
