"""The plan: the root model of a tminus YAML file and its top-level sections."""

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tminus.plan._base import Name, PlanModel
from tminus.plan.checks import CheckRef
from tminus.plan.notifications import (
    NotificationChannel,
    NotificationRule,
    Notifications,
    RateLimit,
)
from tminus.plan.steps import Step
from tminus.plan.targets import Targets
from tminus.plan.values import DurationStr

from ._base import new_dict, new_list

__all__ = [
    "Approvals",
    "ChecklistItem",
    "Contact",
    "Contacts",
    "MaintenanceConfig",
    "MaintenanceWindow",
    "NotificationChannel",
    "NotificationRule",
    "Notifications",
    "Operation",
    "OperationParam",
    "Phase",
    "Plan",
    "RateLimit",
    "Risk",
    "RiskLevel",
    "Role",
    "RollbackTrigger",
    "SuccessMetric",
    "Troubleshooting",
    "Watch",
    "WatchPeriod",
    "Window",
    "parent_plan_name",
]

RiskLevel = Literal["very_low", "low", "medium", "high", "critical"]
OnFailure = Literal["rollback", "pause", "continue"]


class Window(PlanModel):
    """When the deployment happens and how much downtime it may cause."""

    start: datetime | None = Field(None, description="ISO time; omit or 'TBD' if unscheduled.")
    timezone: str = "UTC"
    duration: DurationStr | None = Field(None, description="Length of the window.")
    max_downtime: DurationStr | None = Field(None, description="Allowed user-visible downtime.")
    on_overrun: Literal["pause", "rollback", "continue"] = Field(
        "pause",
        description="When a phase of the window is about to start and the estimates of the "
        "phases left no longer fit before the window ends: pause (once; resuming goes on), "
        "roll back, or continue (recorded and notified).",
    )
    notes: str | None = None

    @field_validator("start", mode="before")
    @classmethod
    def _tbd(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().upper() in ("TBD", ""):
            return None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone '{value}'; use an IANA name like 'UTC' or 'America/New_York'"
            ) from None
        return value


class Role(PlanModel):
    """A role: the people who fill it and how to reach them."""

    people: list[str] = Field(default_factory=new_list)
    contact: str | None = None
    responsibilities: list[str] = Field(default_factory=new_list)
    on_call: bool = False

    @field_validator("people", "responsibilities", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Approvals(PlanModel):
    """Roles whose sign-off a run requires before its first phase."""

    required: list[Name] = Field(default_factory=new_list)
    separation_of_duties: bool = Field(
        False, description="The person who started a deploy cannot approve it."
    )


class MaintenanceConfig(PlanModel):
    """How maintenance mode is turned on and off (commands or a flag file)."""

    enable: str | None = None
    disable: str | None = None
    flag_file: str | None = None

    @model_validator(mode="after")
    def _how(self) -> "MaintenanceConfig":
        if not self.flag_file and not (self.enable and self.disable):
            raise ValueError("maintenance needs 'flag_file', or both 'enable' and 'disable'")
        return self


class ChecklistItem(PlanModel):
    """A pre-deployment item: manual (a person confirms) or automated (a check)."""

    item: str = Field(description="What must be true.")
    id: Name | None = None
    owner: Name | None = None
    section: str | None = None
    check: CheckRef | None = Field(None, description="Automated: the check that proves it.")


class Phase(PlanModel):
    """A phase: steps, then verify checks; rollback steps; a failure policy."""

    name: str
    description: str | None = None
    estimate: DurationStr | None = None
    downtime: bool = False
    risk: RiskLevel | None = None
    owner: Name | None = None
    script: str | None = Field(None, description="Legacy script this phase replaces.")
    after: DurationStr | None = Field(None, description="Delay after the previous phase, e.g. 30d.")
    on_failure: OnFailure = "rollback"
    steps: list[Step] = Field(default_factory=new_list)
    verify: list[CheckRef] = Field(default_factory=new_list)
    rollback: list[Step] = Field(default_factory=new_list)
    notes: str | None = None


class SuccessMetric(PlanModel):
    """A success metric: what is measured, its target, and the check that measures it."""

    name: str
    target: str | None = Field(None, description="The target as people say it, e.g. '>95%'.")
    check: CheckRef | None = None
    monitoring: str | None = Field(None, description="Where the value comes from.")
    after: DurationStr | None = Field(
        None,
        description="Measure it this long after the end of the last phase of the window (the "
        "last one before the first delayed phase), e.g. 1h; default: at that end.",
    )

    @model_validator(mode="after")
    def _after_needs_check(self) -> "SuccessMetric":
        if self.after is not None and self.check is None:
            raise ValueError("'after' says when the metric's check runs: it needs a 'check'")
        return self


class WatchPeriod(PlanModel):
    """Run checks every ``every`` for ``for``; periods follow each other unless ``start``."""

    every: DurationStr
    for_: DurationStr = Field(alias="for")
    start: DurationStr | None = Field(None, description="Offset from the end of the deploy.")
    checks: list[CheckRef] = Field(default_factory=new_list)
    label: str | None = None


class Watch(PlanModel):
    """The post-deployment watch: a schedule of checks after the deploy succeeds."""

    schedule: list[WatchPeriod] = Field(default_factory=new_list)
    on_critical: Literal["notify", "rollback", "operation"] = Field(
        "notify",
        description="What a CRITICAL result does: notify (the watch_critical rules), roll "
        "the deploy back (within its rollback_window), or run `operation`.",
    )
    operation: Name | None = Field(
        None, description="on_critical: operation: the operation of the plan to run."
    )
    on_warn: Literal["notify", "ignore"] = Field(
        "notify", description="What a WARN result does: notify (the watch_warn rules) or ignore."
    )
    notes: list[str] = Field(default_factory=new_list)

    @model_validator(mode="after")
    def _operation_named(self) -> "Watch":
        if self.on_critical == "operation" and not self.operation:
            raise ValueError("on_critical: operation needs 'operation' (an operation's name)")
        if self.operation and self.on_critical != "operation":
            raise ValueError("'operation' is run by on_critical: operation; set it, or drop it")
        return self


class OperationParam(PlanModel):
    type: Literal["str", "int", "float", "bool"] = "str"
    default: str | int | float | bool | None = None
    required: bool = False
    description: str | None = None


class Operation(PlanModel):
    """A named procedure (Octopus calls them runbooks): restart an import, emergency stop…"""

    description: str | None = None
    params: dict[Name, OperationParam] = Field(default_factory=new_dict)
    steps: list[Step] = Field(default_factory=new_list)
    checks: list[CheckRef] = Field(default_factory=new_list)
    roles: list[Name] = Field(default_factory=new_list)
    confirm: bool | str = Field(False, description="Ask before running; a string is the prompt.")
    dangerous: bool = False
    emergency: bool = False
    estimate: DurationStr | None = Field(
        None, description="How long the procedure should take, e.g. a rollback in under 5m."
    )
    on_failure: Literal["rollback", "pause"] = Field(
        "rollback",
        description="When a step or check fails: undo the steps that ran (rollback), or stop "
        "and leave everything as it is for the operator (pause: resume or abort).",
    )


class Troubleshooting(PlanModel):
    """A known error: symptom, likely cause, fix, and optionally an operation that applies it."""

    title: str
    symptom: str
    cause: str | None = None
    fix: str
    operation: Name | None = None


class Risk(PlanModel):
    """A risk register entry."""

    name: str
    likelihood: Literal["low", "medium", "high"]
    impact: Literal["low", "medium", "high"]
    mitigation: str
    contingency: str | None = None
    rollback: str | None = Field(None, description="The phase or operation that undoes it.")


class RollbackTrigger(PlanModel):
    """A condition that calls for rollback, as a check wherever it can be. With a check,
    tminus evaluates it while the phases it covers run, every ``interval``; without one it is
    a manual trigger: the runbook lists it for the operator."""

    name: str
    check: CheckRef | None = None
    action: Literal["rollback", "pause", "notify"] = "rollback"
    phases: list[str | int] = Field(
        default_factory=new_list,
        description="Phases (names or numbers from 1) during which the check is evaluated; "
        "default: every phase.",
    )
    interval: DurationStr = Field(
        timedelta(seconds=30), description="How often the check is evaluated (default 30s)."
    )


class Contact(PlanModel):
    name: str
    role: Name | None = None
    contact: str | None = None


class Contacts(PlanModel):
    emergency: list[Contact] = Field(default_factory=new_list)
    escalation: list[str] = Field(default_factory=new_list)


class MaintenanceWindow(PlanModel):
    """A recurring maintenance window (daily, weekly, monthly) with its checklists."""

    name: str
    schedule: str
    tasks: list[str] = Field(default_factory=new_list)
    pre_checklist: list[str] = Field(default_factory=new_list)
    post_checklist: list[str] = Field(default_factory=new_list)
    operation: Name | None = None


class Plan(PlanModel):
    """A production deployment plan."""

    tminus: Literal[1] = Field(1, description="Plan format version.")
    name: Name
    version: str | None = None
    environment: str = "production"
    owner: str | None = None
    risk: RiskLevel = "medium"
    description: str | None = None
    status: str | None = None
    window: Window = Field(default_factory=Window)
    roles: dict[Name, Role] = Field(default_factory=new_dict)
    approvals: Approvals = Field(default_factory=Approvals)
    variables: dict[Name, str | int | float | bool] = Field(default_factory=new_dict)
    secrets: dict[Name, str] = Field(default_factory=new_dict)
    maintenance: MaintenanceConfig | None = None
    targets: Targets = Field(default_factory=Targets)
    checks: dict[Name, CheckRef] = Field(default_factory=new_dict)
    checklist: list[ChecklistItem] = Field(default_factory=new_list)
    phases: list[Phase] = Field(min_length=1)
    success_metrics: list[SuccessMetric] = Field(default_factory=new_list)
    watch: Watch | None = None
    notifications: Notifications = Field(default_factory=Notifications)
    operations: dict[Name, Operation] = Field(default_factory=new_dict)
    troubleshooting: list[Troubleshooting] = Field(default_factory=new_list)
    risks: list[Risk] = Field(default_factory=new_list)
    rollback_triggers: list[RollbackTrigger] = Field(default_factory=new_list)
    rollback_window: DurationStr | None = Field(
        None,
        description="How long after it ended a deploy may still be rolled back with "
        "`tminus rollback` (default 7d).",
    )
    contacts: Contacts = Field(default_factory=Contacts)
    health: list[CheckRef] = Field(default_factory=new_list)
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=new_list)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return (
            str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        )

    def phase_index(self, ref: str | int) -> int | None:
        """The index of a phase named by its name or its 1-based number; None if no phase."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            n = int(ref)
            return n - 1 if 1 <= n <= len(self.phases) else None
        for i, phase in enumerate(self.phases):
            if phase.name == ref:
                return i
        return None

    def in_window_phases(self) -> list[Phase]:
        """Phases that run inside the window: those before the first delayed one."""
        out: list[Phase] = []
        for phase in self.phases:
            if phase.after is not None and out:
                break
            out.append(phase)
        return out

    def total_estimate(self) -> timedelta:
        return sum((p.estimate or timedelta() for p in self.in_window_phases()), timedelta())

    def downtime_estimate(self) -> timedelta:
        return sum(
            (p.estimate or timedelta() for p in self.in_window_phases() if p.downtime), timedelta()
        )


def parent_plan_name(plan: Plan) -> str:
    """The name of the plan whose deploys an operation's ``{deploy: latest, …}`` looks at: for
    the derived plan of an operation (named ``<plan>.op.<operation>``, holding one phase
    named after the operation) the plan it came from; for any other plan its own name."""
    head, sep, op_name = plan.name.rpartition(".op.")
    if sep and head and len(plan.phases) == 1 and plan.phases[0].name == op_name:
        return head
    return plan.name
