"""Pieces shared by the sections of the runbook: roles with people, check tables, step lines."""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from datetime import timedelta

from tminus.plan._runbook import (
    Item,
    Strong,
    Text,
    check_source,
    nested_steps,
    one_line,
    plain,
    ref_name_hint,
    summarize_step,
    txt,
)
from tminus.plan._runbook_checks import check_label, expectation, threshold
from tminus.plan.checks import CheckBase, CheckUse
from tminus.plan.model import Plan
from tminus.plan.steps import StepBase
from tminus.plan.values import format_duration
from tminus.plan.walk import resolve_check

__all__ = [
    "CHECK_HEADERS",
    "SOURCES",
    "check_rows",
    "dur",
    "named_check",
    "risk_label",
    "source_cell",
    "step_item",
    "step_label",
    "step_line",
    "who",
]


def risk_label(level: str | None) -> str:
    return level.replace("_", " ").capitalize() if level else "-"


def who(plan: Plan, role: str | None) -> Text:
    """A role with its people: ``deployer (Ana, Bo)``; a name that is no role as written."""
    if not role:
        return txt("-")
    people = plan.roles[role].people if role in plan.roles else []
    return txt(Strong(role), f" ({', '.join(people)})" if people else None)


def dur(td: timedelta | None) -> str:
    return format_duration(td) if td is not None else "-"


def named_check(plan: Plan, ref: CheckBase | CheckUse) -> tuple[str, CheckBase | None]:
    """The check ``ref`` stands for, and its label: its name, the name it is used under, or
    one derived from what it does (:func:`~tminus.plan._runbook_checks.check_label`)."""
    resolved = resolve_check(plan, ref)
    if resolved is not None and resolved.name:
        return resolved.name, resolved
    if isinstance(ref, CheckUse):
        return ref_name_hint(ref), resolved
    return check_label(resolved, ref), resolved


#: In the runbook being built (``build_runbook`` sets it): where each check's source was first
#: printed, by the check's name and source (``"phase 2"``). A later table prints "as in
#: phase 2" instead of the same query or command again.
SOURCES: ContextVar[dict[tuple[str, str], str] | None] = ContextVar("SOURCES", default=None)


def source_cell(name: str, check: CheckBase | None, where: str | None = None) -> Text:
    """The check's source, or where it was printed already; ``where`` records this place as
    the first (a phase's verify table)."""
    source = check_source(check)
    seen = SOURCES.get()
    if seen is None or check is None:
        return source
    key = (name, plain(source))
    if key in seen:
        return txt(f"as in {seen[key]}")
    if where is not None:
        seen[key] = where
    return source


def check_rows(
    plan: Plan, refs: Iterable[CheckBase | CheckUse], where: str | None = None
) -> list[list[Text]]:
    """One row per check (:data:`CHECK_HEADERS`); ``where`` names this table for
    :func:`source_cell`."""
    rows: list[list[Text]] = []
    for ref in refs:
        name, check = named_check(plan, ref)
        rows.append(
            [
                txt(name),
                source_cell(name, check, where),
                txt(expectation(check)),
                txt(threshold(check, "warn")),
                txt(threshold(check, "critical")),
            ]
        )
    return rows


CHECK_HEADERS = ["Check", "Source", "Expect", "Warn", "Critical"]


def step_label(step: StepBase) -> str:
    """A step's name or id; for an unnamed step, what it does (its kind alone says little)."""
    if step.name or step.id:
        return step.title()
    return one_line(plain(summarize_step(step)), 60)


def step_line(plan: Plan, step: StepBase) -> Text:
    meta = [f"~{format_duration(step.estimate)}" if step.estimate else ""]
    meta.append(f"owner {step.owner}" if step.owner else "")
    meta.append(f"{step.retries.attempts} attempts" if step.retries else "")
    kept = [m for m in meta if m]
    named = txt(Strong(step.title()), " — ") if step.name or step.id else None
    return txt(named, summarize_step(step), f" ({', '.join(kept)})" if kept else None)


def step_item(plan: Plan, step: StepBase) -> Item:
    children = [
        Item(txt(f"{role}: ", step_line(plan, inner))) for role, inner in nested_steps(step)
    ]
    if step.description:
        children.insert(0, Item(txt(one_line(step.description, 300))))
    return Item(step_line(plan, step), children)
