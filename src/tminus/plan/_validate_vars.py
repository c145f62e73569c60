"""Validation of ``${...}`` references: undefined variables and artifacts, bad references,
secrets written in clear text, and durations and conditions written with variables."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from tminus.plan._validate_base import _Collector
from tminus.plan.interpolate import BUILTIN_VARIABLES, ResolveError, Resolver, references
from tminus.plan.model import Plan
from tminus.plan.problems import Loc, did_you_mean
from tminus.plan.steps import StepBase
from tminus.plan.values import DeferredDuration, resolve_condition, resolve_duration
from tminus.plan.walk import StepSite, iter_check_sites, iter_steps


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


def _strings(data: Any, path: Loc = ()) -> Iterator[tuple[Loc, str]]:
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _strings(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _strings(v, (*path, i))


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
