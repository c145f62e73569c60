"""The fleet step kinds (ssh, upload, release) and their batches and ``max_fail``."""

import math
import re
from fractions import Fraction
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from tminus.plan._step_base import StepBase

from ._base import new_dict, new_list

if TYPE_CHECKING:  # the union exists once every kind is defined; plan.steps hands it over
    from tminus.plan.steps import Step

__all__ = [
    "FLEET_HOOK_VARIABLES",
    "FLEET_HOST_VARIABLES",
    "BatchSpec",
    "FleetOn",
    "ReleaseStep",
    "SshStep",
    "UploadStep",
    "batch_problem",
    "batch_problem_or_raise",
    "batch_sizes",
    "max_fail_problem",
    "tolerated_failures",
]

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
    env: dict[str, str] = Field(default_factory=new_dict)
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
    before_batch: "list[Step]" = Field(
        default_factory=new_list, description="Steps run before each batch (${batch_hosts})."
    )
    after_batch: "list[Step]" = Field(
        default_factory=new_list, description="Steps run after each batch (${batch_hosts})."
    )

    def default_title(self) -> str:
        return f"ssh {self.on}: {self.command[:60]}"


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
        default_factory=new_list, description="Paths linked from shared/ (a trailing / is a dir)."
    )
    keep: int = Field(5, ge=1, description="Releases kept per host (current and previous always).")
    batch: int | str | list[int | str] | None = None
    max_fail: int | str = 0
    max_fail_per_batch: int | str | None = None
    first_batch_canary: bool = True
    before_batch: "list[Step]" = Field(default_factory=new_list)
    after_batch: "list[Step]" = Field(default_factory=new_list)
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
    def _rollback_names_release(self) -> "ReleaseStep":
        if self.action == "rollback" and not self.release_id:
            raise ValueError("a release step with action: rollback needs 'release_id'")
        return self
