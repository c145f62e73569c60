"""Steps: one action with an optional undo, a discriminated union on ``kind``.

Every kind any tminus issue implements is declared here, so plans stay stable while the
engine grows. Fields shared by all kinds live on :class:`StepBase`.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from tminus.plan._base import Name, PlanModel
from tminus.plan.checks import CheckRef, SqlParams
from tminus.plan.values import DurationStr, VarDurationStr

__all__ = [
    "FLEET_HOOK_VARIABLES",
    "FLEET_HOST_VARIABLES",
    "STEP_KINDS",
    "ApproveStep",
    "BackupRef",
    "BackupStep",
    "BatchSpec",
    "BlueGreenStep",
    "CanaryStep",
    "CanaryStepWeight",
    "FlagStep",
    "FleetOn",
    "HttpExpect",
    "HttpStep",
    "MaintenanceStep",
    "MigrateStep",
    "NotifyStep",
    "ReleaseStep",
    "RestoreStep",
    "Retry",
    "RunStep",
    "SnapshotStep",
    "SqlStep",
    "SshStep",
    "Step",
    "StepBase",
    "TrafficStep",
    "UploadStep",
    "VerifyBackupStep",
    "WaitStep",
    "batch_problem",
    "batch_sizes",
    "max_fail_problem",
    "tolerated_failures",
]


class Retry(PlanModel):
    """Retries with exponential backoff: delay, delay×backoff, … capped at max_delay."""

    attempts: int = Field(1, ge=1, le=100, description="Total attempts, the first included.")
    delay: DurationStr = timedelta(seconds=1)
    backoff: float = Field(2.0, ge=1.0)
    max_delay: DurationStr = timedelta(seconds=60)

    @model_validator(mode="before")
    @classmethod
    def _int_shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"attempts": value + 1}
        return value


class StepBase(PlanModel):
    """Fields every step has."""

    id: Name | None = Field(None, description="Stable id; artifacts are read through it.")
    name: str | None = Field(None, description="What the runbook calls this task.")
    description: str | None = None
    owner: Name | None = Field(None, description="The role that performs or owns the task.")
    estimate: DurationStr | None = None
    timeout: DurationStr | None = None
    retries: Retry | None = None
    idempotent: bool = Field(
        False, description="Safe to re-run if it was in flight when the runner died."
    )
    undo: list[Step] = Field(
        default_factory=list, description="Compensation steps run if the deploy rolls back."
    )

    def title(self) -> str:
        """What reports call this step: its name, else its id, else a summary of it."""
        return self.name or self.id or self.default_title()

    def default_title(self) -> str:
        return str(getattr(self, "kind", "step"))


class RunStep(StepBase):
    """A local shell command."""

    kind: Literal["run"]
    command: str | list[str]
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    expect_exit: list[int] = Field(default_factory=lambda: [0])

    def default_title(self) -> str:
        cmd = self.command if isinstance(self.command, str) else " ".join(self.command)
        return f"Run: {cmd[:60]}"


# --- fleet steps (ssh, upload, release): batches and max_fail -------------------------------

BatchSpec = int | str | list[int | str] | None
#: Variables the fields of an ssh/upload/release step may use: the host being worked on.
FLEET_HOST_VARIABLES = ("host", "host_address")
#: Variables a before_batch/after_batch hook may use (besides the host ones).
FLEET_HOOK_VARIABLES = ("batch_hosts", "batch_ok_hosts", "batch_failed_hosts", "batch_index")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
#: ``on:`` of a fleet step: a host or group, or ``${host}`` (only in a before_batch/after_batch
#: hook: each host of the batch; `tminus check` refuses it elsewhere).
FleetOn = Annotated[
    str,
    StringConstraints(
        pattern=r"^(?:[A-Za-z_][A-Za-z0-9_.-]*|\$\{host\})$", min_length=1, max_length=120
    ),
]


def _batch_item(item: int | str, total: int) -> int:
    """One batch size: a count ≥ 1, or a percentage of ``total`` rounded down (at least 1),
    as Ansible's ``serial``."""
    if isinstance(item, bool):
        raise ValueError(f"batch size {item!r} is not a number or a percentage")
    if isinstance(item, int):
        if item < 1:
            raise ValueError(f"batch size must be at least 1, got {item}")
        return item
    text = item.strip()
    if text.isdigit():
        return _batch_item(int(text), total)
    m = _PERCENT.match(text)
    if m is None:
        raise ValueError(f"batch size '{item}' is not a count (2) or a percentage ('25%')")
    pct = Fraction(m.group(1))
    if not 0 < pct <= 100:
        raise ValueError(f"batch percentage must be above 0% and at most 100%, got '{item}'")
    return max(1, math.floor(pct * total / 100))


def batch_sizes(spec: BatchSpec, total: int) -> list[int]:
    """Sizes of the successive batches over ``total`` hosts: ``None`` is one batch of all; a
    list is a ramp whose last size repeats (``[1, 5, '25%']``). Raises ValueError."""
    if total <= 0:
        if spec is not None:
            batch_problem_or_raise(spec)
        return []
    if spec is None:
        return [total]
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise ValueError("a batch ramp needs at least one size")
    sizes: list[int] = []
    left, k = total, 0
    while left > 0:
        size = min(_batch_item(items[min(k, len(items) - 1)], total), left)
        sizes.append(size)
        left -= size
        k += 1
    for item in items[k:]:  # sizes never reached are still checked
        _batch_item(item, total)
    return sizes


def batch_problem_or_raise(spec: BatchSpec) -> None:
    if spec is None:
        return
    items = spec if isinstance(spec, list) else [spec]
    if not items:
        raise ValueError("a batch ramp needs at least one size")
    for item in items:
        _batch_item(item, 100)


def batch_problem(spec: BatchSpec) -> str | None:
    """Why ``spec`` is not a valid ``batch``, or None."""
    try:
        batch_problem_or_raise(spec)
    except ValueError as exc:
        return str(exc)
    return None


def tolerated_failures(spec: int | str, total: int, what: str = "max_fail") -> int:
    """How many failed hosts a step of ``total`` hosts tolerates: a count, or a percentage of
    ``total`` rounded down (so ``'10%'`` of 10 hosts tolerates 1, of 9 hosts none: the step
    fails when *more than* 10% failed, as Ansible's ``max_fail_percentage``). Raises
    ValueError."""
    if isinstance(spec, bool):
        raise ValueError(f"{what} {spec!r} is not a count or a percentage")
    if isinstance(spec, int):
        if spec < 0:
            raise ValueError(f"{what} must be 0 or more, got {spec}")
        return spec
    text = spec.strip()
    if text.isdigit():
        return int(text)
    m = _PERCENT.match(text)
    if m is None:
        raise ValueError(f"{what} '{spec}' is not a count (1) or a percentage ('10%')")
    pct = Fraction(m.group(1))
    if pct > 100:
        raise ValueError(f"{what} percentage must be at most 100%, got '{spec}'")
    return math.floor(pct * total / 100)


def max_fail_problem(spec: int | str, what: str = "max_fail") -> str | None:
    """Why ``spec`` is not a valid ``max_fail`` (or ``max_fail_per_batch``), or None."""
    try:
        tolerated_failures(spec, 100, what)
    except ValueError as exc:
        return str(exc)
    return None


class SshStep(StepBase):
    """A command on every host of a group, in rolling batches."""

    kind: Literal["ssh"]
    on: FleetOn = Field(description="A host or group (in a hook also ${host}).")
    command: str
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    batch: int | str | list[int | str] | None = Field(
        None, description="Hosts per batch: 2, '25%', or a ramp [1, 5, '25%']."
    )
    max_fail: int | str = Field(
        0,
        description="Failed hosts tolerated over the whole step: a count or a percentage; "
        "more fails the step before its next batch.",
    )
    max_fail_per_batch: int | str | None = Field(
        None,
        description="Failed hosts tolerated in each batch (Ansible's max_fail_percentage): a "
        "count or a percentage of the batch; more stops the step after that batch.",
    )
    first_batch_canary: bool = Field(
        True,
        description="Any failure in the first batch stops the rollout (when more batches follow).",
    )
    run_once: bool = Field(False, description="Run on one host only: the first reachable one.")
    become: bool | str = False
    before_batch: list[Step] = Field(
        default_factory=list, description="Steps run before each batch (${batch_hosts})."
    )
    after_batch: list[Step] = Field(
        default_factory=list, description="Steps run after each batch (${batch_hosts})."
    )

    def default_title(self) -> str:
        return f"ssh {self.on}: {self.command[:60]}"


class HttpExpect(PlanModel):
    status: int | list[int] | None = None
    body_contains: str | None = None
    max_latency: DurationStr | None = None


class HttpStep(StepBase):
    """An HTTP request plus expectations."""

    kind: Literal["http"]
    url: str
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    json_body: Any = Field(None, alias="json")
    expect: HttpExpect = Field(default_factory=HttpExpect)


class SqlStep(StepBase):
    """Statements run on a database target, in one transaction by default."""

    kind: Literal["sql"]
    database: Name
    statements: list[str] = Field(default_factory=list)
    file: str | None = None
    transaction: bool = True
    params: SqlParams = Field(
        default_factory=dict, description="Values bound to the statements' :name placeholders."
    )

    @field_validator("statements", mode="before")
    @classmethod
    def _one_statement(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _something_to_run(self) -> SqlStep:
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
    def _duration_or_until(self) -> WaitStep:
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
    channels: list[Name] = Field(default_factory=list)
    severity: Literal["info", "warning", "critical"] = "info"

    def default_title(self) -> str:
        return f"Notify: {self.message[:60]}"


class BackupStep(StepBase):
    """Back up a database or a path target; writes a verified manifest."""

    kind: Literal["backup"]
    database: Name | None = None
    path: Name | None = None
    dest: str | None = Field(None, description="Directory for backups; default .tminus/backups.")
    jobs: int = Field(2, ge=1, le=64)

    @model_validator(mode="after")
    def _one_target(self) -> BackupStep:
        if (self.database is None) == (self.path is None):
            raise ValueError("a backup step needs exactly one of 'database' or 'path'")
        return self


class BackupRef(PlanModel):
    """A backup an earlier deploy made: ``{deploy: latest, backup: db_backup}``."""

    deploy: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="'latest' (the newest deploy of this plan and environment whose backup "
        "verifies; for an operation: of its plan) or a deploy id such as shop-12."
    )
    backup: Name = Field(description="The id of the backup step that made it.")

    def __str__(self) -> str:
        return f"{self.backup} of deploy {self.deploy}"


#: ``from:`` of a restore or verify_backup step: a backup step id of this deploy, or a backup
#: of an earlier deploy.
BackupFrom = Name | BackupRef


class RestoreStep(StepBase):
    """Restore a backup artifact (the latest backup of the same target by default)."""

    kind: Literal["restore"]
    from_: BackupFrom = Field(
        alias="from",
        description="The id of the backup step (of this deploy), or {deploy: latest|ID, "
        "backup: ID} for a backup an earlier deploy made.",
    )
    database: Name | None = None
    path: Name | None = None
    jobs: int = Field(2, ge=1, le=64)


class VerifyBackupStep(StepBase):
    """Restore into a scratch copy, compare with the manifest, drop the copy."""

    kind: Literal["verify_backup"]
    from_: BackupFrom = Field(
        alias="from",
        description="The id of the backup step (of this deploy), or {deploy: latest|ID, "
        "backup: ID} for a backup an earlier deploy made.",
    )


class MigrateStep(StepBase):
    """A schema migration: alembic, a directory of up/down SQL files, or a pair of commands."""

    kind: Literal["migrate"]
    database: Name
    tool: Literal["alembic", "sql_dir", "command"]
    config: str | None = Field(None, description="alembic: path of alembic.ini.")
    revision: str = Field("head", description="alembic: target revision.")
    dir: str | None = Field(None, description="sql_dir: directory of NNN_name.up/down.sql.")
    to: int | None = Field(None, description="sql_dir: target version; default latest.")
    up: str | None = Field(None, description="command: migrate up.")
    down: str | None = Field(None, description="command: migrate down to $TMINUS_VERSION.")
    version: str | None = Field(None, description="command: prints the current version.")
    on_rollback: Literal["down", "restore", "none"] = "down"
    backup: Name | None = Field(None, description="Backup step restored when on_rollback: restore.")

    @model_validator(mode="after")
    def _tool_fields(self) -> MigrateStep:
        need = {"alembic": ["config"], "sql_dir": ["dir"], "command": ["up"]}[self.tool]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"migrate with tool '{self.tool}' needs '{missing[0]}'")
        if self.on_rollback == "restore" and not self.backup:
            raise ValueError("on_rollback: restore needs 'backup' (the id of a backup step)")
        return self


class SnapshotStep(StepBase):
    """Record tables, indexes, row counts and file counts for a later no_data_loss check."""

    kind: Literal["snapshot"]
    databases: list[Name] = Field(default_factory=list)
    paths: list[Name] = Field(default_factory=list)


class UploadStep(StepBase):
    """Copy files to a group with checksums; unchanged files are skipped."""

    kind: Literal["upload"]
    on: FleetOn
    src: str = Field(description="A local file or directory (with a trailing / its contents).")
    dest: str = Field(description="Remote path; a directory if it ends with / or src is one.")
    mode: str | None = Field(None, description="Permissions of every uploaded file, e.g. '0640'.")
    batch: int | str | list[int | str] | None = None
    max_fail: int | str = 0
    max_fail_per_batch: int | str | None = None
    first_batch_canary: bool = True

    def default_title(self) -> str:
        return f"Upload {self.src[:40]} to {self.on}:{self.dest[:40]}"

    @field_validator("mode")
    @classmethod
    def _octal_mode(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"0?[0-7]{3,4}", value):
            raise ValueError(f"mode must be octal permissions like '0644', got '{value}'")
        return value


class ReleaseStep(StepBase):
    """Capistrano-style release: releases/<id>, shared links, atomic `current` switch."""

    kind: Literal["release"]
    on: FleetOn
    path: str = Field(description="The deploy root holding releases/, shared/ and current.")
    source: str = Field(description="Directory whose contents become the release.")
    release_id: str | None = Field(
        None, description="Name of the release directory; default a UTC timestamp."
    )
    shared: list[str] = Field(
        default_factory=list, description="Paths linked from shared/ (a trailing / is a dir)."
    )
    keep: int = Field(5, ge=1, description="Releases kept per host (current and previous always).")
    batch: int | str | list[int | str] | None = None
    max_fail: int | str = 0
    max_fail_per_batch: int | str | None = None
    first_batch_canary: bool = True
    before_batch: list[Step] = Field(default_factory=list)
    after_batch: list[Step] = Field(default_factory=list)
    action: Literal["deploy", "rollback"] = Field(
        "deploy",
        description="rollback: switch `current` back on hosts where it points at release_id "
        "and mark the release BAD_RELEASE (what the built-in undo runs).",
    )

    def default_title(self) -> str:
        if self.action == "rollback":
            return f"Roll back release {self.release_id} on {self.on}"
        return f"Release {self.release_id or ''} to {self.on}:{self.path[:50]}".replace("  ", " ")

    @model_validator(mode="after")
    def _rollback_names_release(self) -> ReleaseStep:
        if self.action == "rollback" and not self.release_id:
            raise ValueError("a release step with action: rollback needs 'release_id'")
        return self


_RESTORE_DOC = (
    "Written by tminus in the undo it registers, never in a plan: restore what the step with "
    "this key recorded before it changed anything."
)


class TrafficStep(StepBase):
    """Set the weights of a router's pools (in percent)."""

    kind: Literal["traffic"]
    router: Name
    weights: dict[Name, int] = Field(default_factory=dict)
    restore: str | None = Field(None, description=_RESTORE_DOC)

    @field_validator("weights")
    @classmethod
    def _weights_range(cls, value: dict[str, int]) -> dict[str, int]:
        for pool, w in value.items():
            if not 0 <= w <= 100:
                raise ValueError(f"weight of '{pool}' must be between 0 and 100, got {w}")
        return value

    @model_validator(mode="after")
    def _weights_or_restore(self) -> TrafficStep:
        if not self.weights and self.restore is None:
            raise ValueError("a traffic step needs 'weights'")
        return self

    def default_title(self) -> str:
        if self.restore is not None:
            return f"Restore the traffic split of {self.router}"
        split = ", ".join(f"{p} {w}%" for p, w in self.weights.items())
        return f"Traffic on {self.router}: {split}"


class FlagStep(StepBase):
    """Set a feature flag's percentage (sticky by user key) or switch it on or off."""

    kind: Literal["flag"]
    store: Name
    flag: str
    percentage: float | None = Field(None, ge=0, le=100)
    enabled: bool | None = None
    restore: str | None = Field(None, description=_RESTORE_DOC)

    @model_validator(mode="after")
    def _something_to_set(self) -> FlagStep:
        if self.percentage is None and self.enabled is None and self.restore is None:
            raise ValueError("a flag step needs 'percentage' or 'enabled'")
        return self

    def default_title(self) -> str:
        if self.restore is not None:
            return f"Restore flag {self.flag}"
        parts = [f"{self.percentage:g}%"] if self.percentage is not None else []
        if self.enabled is not None:
            parts.append("on" if self.enabled else "off")
        return f"Flag {self.flag}: {', '.join(parts)}"


class CanaryStepWeight(PlanModel):
    """One step of a canary: a weight held for ``pause`` or until promoted by hand."""

    weight: int = Field(ge=0, le=100)
    pause: VarDurationStr | Literal["manual"] | None = None

    @field_validator("pause", mode="before")
    @classmethod
    def _manual(cls, value: Any) -> Any:
        return "manual" if value == "manual" else value


class CanaryStep(StepBase):
    """Shift traffic to a canary pool step by step while analysis runs."""

    kind: Literal["canary"]
    router: Name
    stable: Name
    canary: Name
    steps: list[CanaryStepWeight] = Field(min_length=1)
    analysis: list[CheckRef] = Field(default_factory=list)
    promote: bool = Field(
        True,
        description="Send all traffic to the canary after the last step; false holds the last "
        "weight so that a later phase continues the rollout (5% → 25% → 100% over days).",
    )


class BlueGreenStep(StepBase):
    """Deploy to the idle pool, check it, switch; keep the old pool for instant switch-back."""

    kind: Literal["blue_green"]
    router: Name
    active: Name
    idle: Name
    deploy: list[Step] = Field(default_factory=list)
    preview: list[CheckRef] = Field(default_factory=list)
    rollback_window: DurationStr | None = None


STEP_KINDS: tuple[str, ...] = (
    "run",
    "ssh",
    "http",
    "sql",
    "wait",
    "approve",
    "maintenance",
    "backup",
    "restore",
    "verify_backup",
    "migrate",
    "snapshot",
    "upload",
    "release",
    "traffic",
    "flag",
    "canary",
    "blue_green",
    "notify",
)

Step = Annotated[
    RunStep
    | SshStep
    | HttpStep
    | SqlStep
    | WaitStep
    | ApproveStep
    | MaintenanceStep
    | BackupStep
    | RestoreStep
    | VerifyBackupStep
    | MigrateStep
    | SnapshotStep
    | UploadStep
    | ReleaseStep
    | TrafficStep
    | FlagStep
    | CanaryStep
    | BlueGreenStep
    | NotifyStep,
    Field(discriminator="kind"),
]

for _model in (
    StepBase,
    SshStep,
    BlueGreenStep,
    RunStep,
    HttpStep,
    SqlStep,
    WaitStep,
    ApproveStep,
    MaintenanceStep,
    BackupStep,
    RestoreStep,
    VerifyBackupStep,
    MigrateStep,
    SnapshotStep,
    UploadStep,
    ReleaseStep,
    TrafficStep,
    FlagStep,
    CanaryStep,
    NotifyStep,
):
    _model.model_rebuild()
