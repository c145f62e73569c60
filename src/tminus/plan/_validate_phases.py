"""Validation of phases and their schedule: estimates within the window and downtime budget,
rollback triggers, maintenance spans and downtime phases, and risky-but-legal warnings."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tminus.plan._validate_base import _Collector
from tminus.plan.model import Plan
from tminus.plan.steps import (
    BackupStep,
    CanaryStep,
    MaintenanceStep,
    MigrateStep,
    ReleaseStep,
    RestoreStep,
    RunStep,
    SqlStep,
    SshStep,
    StepBase,
)
from tminus.plan.values import format_duration
from tminus.plan.walk import StepSite, iter_steps


def _window(plan: Plan, c: _Collector) -> None:
    w = plan.window
    total = plan.total_estimate()
    if w.duration is not None and total > w.duration:
        c.add(
            "error",
            "exceeds-window",
            f"phase estimates add up to {format_duration(total)}, more than the "
            f"{format_duration(w.duration)} window",
            ("window", "duration"),
            "shorten phases, move work to a delayed phase ('after:'), or widen the window",
        )
    down = plan.downtime_estimate()
    if w.max_downtime is not None and down > w.max_downtime:
        c.add(
            "error",
            "exceeds-downtime",
            f"downtime phases are estimated at {format_duration(down)}, more than the allowed "
            f"{format_duration(w.max_downtime)}",
            ("window", "max_downtime"),
            "move work out of the downtime phases or raise window.max_downtime",
        )
    if (w.duration is not None or w.max_downtime is not None) and all(
        p.estimate is None for p in plan.phases
    ):
        c.add(
            "warning",
            "no-estimates",
            "no phase has an estimate; the window cannot be checked",
            ("phases",),
            "add 'estimate: 5m' to each phase",
        )
    for i, phase in enumerate(plan.phases):
        if phase.after is not None and i == 0:
            c.add(
                "warning",
                "delayed-first-phase",
                "the first phase is delayed with 'after:'",
                ("phases", 0, "after"),
                "'after' counts from the end of the previous phase",
            )


def _triggers(plan: Plan, c: _Collector) -> None:
    """Rollback triggers name phases that exist; a trigger without a check is manual."""
    names = ", ".join(f"'{p.name}'" for p in plan.phases)
    for i, t in enumerate(plan.rollback_triggers):
        for j, ref in enumerate(t.phases):
            if plan.phase_index(ref) is None:
                c.add(
                    "error",
                    "trigger-phase",
                    f"rollback trigger '{t.name}' names no phase '{ref}'",
                    ("rollback_triggers", i, "phases", j),
                    f"phases: {names} (or their numbers from 1)",
                )
        if t.check is None and t.phases:
            c.add(
                "error",
                "trigger-without-check",
                f"rollback trigger '{t.name}' has phases but no check to evaluate in them",
                ("rollback_triggers", i, "phases"),
                "add a check, or remove 'phases' (a trigger without a check is manual: the "
                "runbook lists it for the operator)",
            )


def _maintenance_steps(steps: Iterable[StepBase]) -> Iterator[MaintenanceStep]:
    for s in steps:
        if isinstance(s, MaintenanceStep):
            yield s


def _maintenance_spans(plan: Plan, c: _Collector) -> set[int]:
    """Check each ``until:`` of a maintenance step; the phases a span covers after its own."""
    covered: set[int] = set()
    for i, phase in enumerate(plan.phases):
        for j, m in enumerate(phase.steps):
            if not isinstance(m, MaintenanceStep) or (m.until is None and not m.keep):
                continue
            path = ("phases", i, "steps", j)
            if m.action != "on":
                c.add(
                    "error",
                    "maintenance-span-off",
                    "'until' and 'keep' apply to 'action: on' only",
                    path,
                    "remove them from the 'off' step",
                )
                continue
            if m.until is None:
                continue
            end = plan.phase_index(m.until)
            if end is None or end < i:
                names = ", ".join(f"'{p.name}'" for p in plan.phases[i:])
                c.add(
                    "error",
                    "maintenance-until",
                    f"maintenance 'until: {m.until}' names no phase at or after '{phase.name}'",
                    (*path, "until"),
                    f"name a phase (or its number from 1): {names}",
                )
                continue
            covered.update(range(i + 1, end + 1))
    return covered


def _maintenance(plan: Plan, c: _Collector) -> None:
    covered = _maintenance_spans(plan, c)
    for i, phase in enumerate(plan.phases):
        ms = list(_maintenance_steps(phase.steps))
        on = [m for m in ms if m.action == "on"]
        if phase.downtime and not on and i not in covered:
            c.add(
                "error",
                "downtime-without-maintenance",
                f"phase '{phase.name}' is a downtime phase with no maintenance step",
                ("phases", i, "downtime"),
                "add a step '{kind: maintenance, action: on}' (tminus turns it off at the end "
                "of the phase, on failure and on rollback), extend an earlier one with "
                "'until: <this phase>', or set downtime: false",
            )
        if on and not phase.downtime:
            c.add(
                "warning",
                "maintenance-not-downtime",
                f"phase '{phase.name}' turns maintenance on but is not marked downtime",
                ("phases", i),
                "set 'downtime: true' so the runbook and the downtime budget count it",
            )
        if phase.downtime and phase.on_failure == "continue":
            c.add(
                "warning",
                "downtime-continue",
                f"downtime phase '{phase.name}' continues on failure",
                ("phases", i, "on_failure"),
                "a failed downtime phase usually needs rollback",
            )
    for site in iter_steps(plan):
        s = site.step
        if (
            isinstance(s, MaintenanceStep)
            and plan.maintenance is None
            and not s.flag_file
            and not (s.enable and s.disable)
        ):
            c.add(
                "error",
                "maintenance-undefined",
                "maintenance step with no way to switch maintenance",
                site.path,
                "declare top-level 'maintenance: {enable: CMD, disable: CMD}' or "
                "'maintenance: {flag_file: PATH}', or give them on the step",
            )


_DESTRUCTIVE = (MigrateStep, SqlStep, RestoreStep, ReleaseStep, RunStep, SshStep)


def _warnings(plan: Plan, steps: list[StepSite], c: _Collector) -> None:
    backups_seen = False
    for site in steps:
        s = site.step
        if site.position.section != 0 or site.position.phase < 0:
            continue
        if isinstance(s, BackupStep) and s.database:
            backups_seen = True
        if isinstance(s, MigrateStep) and not backups_seen:
            c.add(
                "warning",
                "migrate-without-backup",
                "migration with no database backup before it",
                site.path,
                "add a 'backup' step for this database earlier in the plan",
            )
        if isinstance(s, CanaryStep):
            weights = [w.weight for w in s.steps]
            if weights != sorted(weights):
                c.add(
                    "warning",
                    "canary-order",
                    "canary weights do not increase",
                    (*site.path, "steps"),
                )
            # With `promote: false` the last weight is held on purpose for a later phase.
            if weights[-1] != 100 and s.promote:
                c.add(
                    "warning",
                    "canary-not-full",
                    "the last canary step is not 100%",
                    (*site.path, "steps"),
                    "promotion sends all traffic to the canary anyway",
                )
    if plan.risk in ("high", "critical") and not plan.approvals.required:
        c.add(
            "warning",
            "risky-no-approval",
            f"a {plan.risk}-risk plan needs no approval",
            ("risk",),
            "add 'approvals: {required: [ROLE]}'",
        )
    for i, phase in enumerate(plan.phases):
        destructive = any(isinstance(s, _DESTRUCTIVE) for s in phase.steps)
        has_undo = (
            phase.rollback
            or any(s.undo for s in phase.steps)
            or any(isinstance(s, MigrateStep | ReleaseStep | MaintenanceStep) for s in phase.steps)
        )
        if destructive and not has_undo and phase.on_failure == "rollback" and phase.after is None:
            c.add(
                "warning",
                "no-rollback",
                f"phase '{phase.name}' changes things but has nothing to roll back with",
                ("phases", i),
                "add 'rollback:' steps or 'undo:' on the steps, or set on_failure: pause",
            )
        if phase.estimate is None and plan.window.duration is not None:
            c.add(
                "warning",
                "no-estimate",
                f"phase '{phase.name}' has no estimate",
                ("phases", i),
                "the T-timeline and window check assume 0 for it",
            )
