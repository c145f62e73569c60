"""Semantic validation: what a schema cannot see. References to undefined targets, roles,
checks and artifacts; duplicate names; a restore with no backup before it; estimates that
exceed the window; a downtime phase with no maintenance; and risky-but-legal warnings.

This module runs the rules in order; they live in ``_validate_*`` modules, one per family
(names and references, artifacts, phases and schedule, fleet steps, variables), and the
lints in ``lint_*``.
"""

from __future__ import annotations

from typing import Any

from tminus.plan._validate_artifacts import _artifacts
from tminus.plan._validate_base import _Collector
from tminus.plan._validate_fleet import _fleet, _fleet_scopes
from tminus.plan._validate_notify import _notifications
from tminus.plan._validate_phases import _maintenance, _triggers, _warnings, _window
from tminus.plan._validate_refs import (
    _checks,
    _names,
    _operations,
    _roles,
    _targets,
)
from tminus.plan._validate_vars import _deferred_durations, _variables
from tminus.plan.lint_db_health import db_health_problems
from tminus.plan.lint_secrets import secret_problems
from tminus.plan.lint_shell import shell_problems
from tminus.plan.lint_sql import sql_problems
from tminus.plan.model import Plan
from tminus.plan.problems import Problem
from tminus.plan.walk import iter_steps

__all__ = ["validate_plan"]


def validate_plan(plan: Plan, data: Any = None) -> list[Problem]:
    """All semantic problems of a plan that passed schema validation."""
    c = _Collector()
    steps = list(iter_steps(plan))
    _names(plan, steps, c)
    _targets(plan, steps, c, data)
    _roles(plan, steps, c)
    _checks(plan, c)
    _artifacts(plan, steps, c)
    _window(plan, c)
    _maintenance(plan, c)
    _triggers(plan, c)
    _notifications(plan, c)
    _operations(plan, c)
    _fleet(steps, c)
    _variables(plan, data, c, _fleet_scopes(steps))
    _deferred_durations(plan, steps, c)
    _warnings(plan, steps, c)
    c.problems.extend(shell_problems(plan))
    c.problems.extend(sql_problems(plan))
    c.problems.extend(db_health_problems(plan))
    c.problems.extend(secret_problems(plan, data))
    return c.problems
