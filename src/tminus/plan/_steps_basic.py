"""The simple step kinds: run, http, sql, wait, approve, maintenance, notify."""

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tminus.plan._base import Name, PlanModel
from tminus.plan._step_base import StepBase
from tminus.plan.checks import CheckRef, SqlParams
from tminus.plan.values import DurationStr, VarDurationStr

from ._base import new_dict, new_list

__all__ = [
    "ApproveStep",
    "HttpExpect",
    "HttpStep",
    "MaintenanceStep",
    "NotifyStep",
    "RunStep",
    "SqlStep",
    "WaitStep",
]


class RunStep(StepBase):
    """A local shell command."""

    kind: Literal["run"]
    command: str | list[str]
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=new_dict)
    expect_exit: list[int] = Field(default_factory=lambda: [0])

    def default_title(self) -> str:
        cmd = self.command if isinstance(self.command, str) else " ".join(self.command)
        return f"Run: {cmd[:60]}"


class HttpExpect(PlanModel):
    status: int | list[int] | None = None
    body_contains: str | None = None
    max_latency: DurationStr | None = None


class HttpStep(StepBase):
    """An HTTP request plus expectations."""

    kind: Literal["http"]
    url: str
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=new_dict)
    body: str | None = None
    json_body: Any = Field(None, alias="json")
    expect: HttpExpect = Field(default_factory=HttpExpect)


class SqlStep(StepBase):
    """Statements run on a database target, in one transaction by default."""

    kind: Literal["sql"]
    database: Name
    statements: list[str] = Field(default_factory=new_list)
    file: str | None = None
    transaction: bool = True
    params: SqlParams = Field(
        default_factory=new_dict, description="Values bound to the statements' :name placeholders."
    )

    @field_validator("statements", mode="before")
    @classmethod
    def _one_statement(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _something_to_run(self) -> "SqlStep":
        if not self.statements and not self.file:
            raise ValueError("a sql step needs 'statements' or 'file'")
        return self


class WaitStep(StepBase):
    """Wait a fixed time, or until a check passes (polled every ``interval``)."""

    kind: Literal["wait"]
    duration: VarDurationStr | None = None
    until: CheckRef | None = None
    interval: DurationStr | None = None

    @model_validator(mode="after")
    def _duration_or_until(self) -> "WaitStep":
        if self.duration is None and self.until is None:
            raise ValueError("a wait step needs 'duration' or 'until'")
        return self


class ApproveStep(StepBase):
    """A manual judgment in the middle of a plan: the deploy waits for sign-off."""

    kind: Literal["approve"]
    roles: list[Name] = Field(min_length=1)
    message: str | None = None


class MaintenanceStep(StepBase):
    """Maintenance mode on or off, with the plan's ``maintenance`` commands unless given here."""

    kind: Literal["maintenance"]
    action: Literal["on", "off"]
    enable: str | None = None
    disable: str | None = None
    flag_file: str | None = None
    until: str | int | None = Field(
        None,
        description="With action on: keep maintenance on across phases, until the end of "
        "this phase (its name, or its number counting from 1), unless a step turns it off "
        "first. Without it, tminus turns maintenance off at the end of the phase.",
    )
    keep: bool = Field(
        False,
        description="With action on: leave maintenance on when the deploy succeeds (it still "
        "goes off on rollback, failure and abort).",
    )

    def default_title(self) -> str:
        return f"Maintenance mode {self.action}"

    @field_validator("action", mode="before")
    @classmethod
    def _yaml_bool(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `on`/`off` as a boolean.
        if value is True:
            return "on"
        if value is False:
            return "off"
        return value


class NotifyStep(StepBase):
    """A message to notification channels."""

    kind: Literal["notify"]
    message: str
    channels: list[Name] = Field(default_factory=new_list)
    severity: Literal["info", "warning", "critical"] = "info"

    def default_title(self) -> str:
        return f"Notify: {self.message[:60]}"
