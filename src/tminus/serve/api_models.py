"""The request and response models of the HTTP API (:mod:`tminus.serve.api`): what its
OpenAPI document says each operation takes and answers (schemathesis checks the answers
against them: tests/serve/test_api_schema.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "AbortBody",
    "ActionResult",
    "ApproveBody",
    "ConfirmBody",
    "DeployBrief",
    "DeployList",
    "Event",
    "EventPage",
    "Notification",
    "NotificationList",
    "PlanList",
    "PlanRow",
    "Problem",
    "PromoteBody",
    "RegisterBody",
    "Registered",
    "ResumeBody",
    "RollbackBody",
    "StartBody",
    "UploadBody",
]


class Problem(BaseModel):
    """Why a request was refused: the CLI's message (and hint, in the text)."""

    detail: str


class ActionResult(BaseModel):
    """What an action did: its message (the CLI's), and for a run in a worker its exit code
    (None while it still runs: follow ``/deploys/{id}/stream``)."""

    deploy: str
    message: str
    state: str
    exit_code: int | None = None
    running: bool = False


class DeployBrief(BaseModel):
    id: str
    plan_name: str
    environment: str
    state: str
    stored_state: str
    reason: str | None
    started_by: str
    created_at: datetime
    finished_at: datetime | None
    due_at: datetime | None


class DeployList(BaseModel):
    deploys: list[DeployBrief]
    offset: int
    limit: int


class Event(BaseModel):
    seq: int
    ts: datetime
    type: str
    key: str | None
    message: str | None
    data: Any = None


class EventPage(BaseModel):
    events: list[Event]
    next: int = Field(description="The `after` of the next page.")


class PlanRow(BaseModel):
    name: str
    environment: str
    path: str
    description: str | None
    registered_at: datetime
    registered_by: str
    may_start: bool


class PlanList(BaseModel):
    plans: list[PlanRow]


class Registered(BaseModel):
    name: str
    environment: str
    path: str


class Notification(BaseModel):
    id: int
    key: str
    channel: str
    kind: str
    state: str
    attempts: int
    detail: str | None
    ref: str | None
    created_at: datetime
    sent_at: datetime | None
    next_at: datetime | None
    title: str | None
    when: str | None


class NotificationList(BaseModel):
    notifications: list[Notification]


class ApproveBody(BaseModel):
    role: str = Field(description="The plan's role the person signs as.")
    comment: str | None = None


class PromoteBody(BaseModel):
    role: str | None = Field(
        None,
        description="The role to sign as; default: the first role of the plan the person is in.",
    )
    comment: str | None = None


class ConfirmBody(BaseModel):
    items: list[str] = Field(min_length=1, description="Manual checklist items (text or id).")


class ResumeBody(BaseModel):
    action: Literal["continue", "retry", "skip", "rollback"] = "continue"
    exclude_hosts: list[str] = Field(default_factory=list)


class AbortBody(BaseModel):
    rollback: bool = False


class RollbackBody(BaseModel):
    phases: list[str] = Field(default_factory=list)
    reason: str | None = None
    force: bool = False


class RegisterBody(BaseModel):
    path: str = Field(min_length=1, description="The plan file's path on the server.")


class UploadBody(BaseModel):
    filename: str = Field("plan.yaml", description="The plan's file name (for its problems).")
    text: str = Field(min_length=1, description="The plan's text (YAML).")


class StartBody(BaseModel):
    vars: dict[str, str] = Field(default_factory=dict)
    confirm: list[str] = Field(default_factory=list)
    reason: str | None = None
