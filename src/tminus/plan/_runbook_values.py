"""The runbook's values: ``${…}`` resolved like the dry run does, secrets shown as ``***``.

:class:`RunbookValues` resolves a plan's variables (with the values given by ``--var``), its
built-ins (``${plan_dir}``, ``${plan_name}``…) and ``${env:…}`` references, leniently: a
reference that cannot be resolved on the machine rendering the runbook (an environment
variable not set here, an artifact that exists only during a deploy, a fleet step's
``${host}``) is shown as ``<name>``, never as a raw ``${…}`` (a ``$${`` the plan wrote to
mean a literal ``${`` is shown as ``${``, as it runs). Secrets are never read: every
reference to one is shown as ``***``, and so is the password of any URL.

:func:`resolve_runbook` applies it to every piece of text of a built runbook.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from tminus.plan._runbook_text import Code, Strong
from tminus.plan.interpolate import MASK, ResolveError, Resolver, references
from tminus.plan.model import Plan

__all__ = ["RunbookValues", "resolve_runbook"]

T = TypeVar("T")

_REF = re.compile(r"\$\$\{|\$\{([^{}]*)\}")  # as tminus.plan.interpolate reads them


class RunbookValues:
    """Resolve text of a plan as a dry run would, leniently, secrets masked."""

    def __init__(
        self,
        plan: Plan,
        plan_path: str,
        overrides: Mapping[str, str] | None = None,
        *,
        operator: str = "<operator>",
        env: Mapping[str, str] | None = None,
    ) -> None:
        given = dict(overrides or {})
        unknown = sorted(set(given) - set(plan.variables))
        if unknown:
            raise ValueError(
                f"--var names an undeclared variable: {', '.join(unknown)}"
                + (
                    " (secrets cannot be set with --var)"
                    if set(unknown) & set(plan.secrets)
                    else ""
                )
            )
        plan_dir = Path(plan_path).resolve().parent
        r = Resolver(env=dict(os.environ) if env is None else dict(env), base_dir=plan_dir)
        r.variables.update(
            {
                "deploy_id": "<deploy-id>",
                "plan_name": plan.name,
                "plan_version": plan.version or "",
                "environment": plan.environment,
                "operator": operator,
                "plan_dir": str(plan_dir),
                "state_dir": str(Path(".tminus").resolve()),
            }
        )
        for name in plan.secrets:  # never read: a runbook is printed and passed around
            r.secrets[name] = MASK
        r.artifacts = lambda step, key: f"<artifact {step}.{key}>"
        self._r = r
        for name, raw in {**plan.variables, **given}.items():
            # a --var value is literal text, as for `tminus run`
            r.variables[name] = raw if name in given or not isinstance(raw, str) else self(raw)

    def __call__(self, text: str) -> str:
        """``text`` with every reference resolved (``<name>`` where it cannot be here)."""
        if "${" not in text:
            return self._r.mask(text)

        def sub(m: Any) -> str:
            if m.group(0) == "$${":
                return "${"  # the plan's escaped `$${`: a literal `${` (shell text), as it runs
            try:
                return self._r.resolve(m.group(0))
            except ResolveError:
                ref = references(m.group(0))[0]
                return f"<{ref.name if not ref.namespace else ref.text[2:-1]}>"

        return self._r.mask(_REF.sub(sub, text))


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, Code | Strong):
        return type(value)(fn(value.text))
    if isinstance(value, tuple):
        return tuple(_walk(v, fn) for v in value)
    if isinstance(value, list):
        return [_walk(v, fn) for v in value]
    if is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _walk(getattr(value, f.name), fn) for f in fields(value)}
        return replace(value, **changes)
    return value


def resolve_runbook(runbook: T, fn: Callable[[str], str]) -> T:
    """A copy of ``runbook`` (any of its dataclasses) with ``fn`` applied to every string."""
    result: T = _walk(runbook, fn)
    return result
