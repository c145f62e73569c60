"""The step-kind plug-in interface: what the engine needs from a step kind, and nothing more.

A step kind executes one plan step and may name its own compensation (an undo computed
*before* it runs, so that it survives a crash). The engine knows step kinds only through this
Protocol and the registry in :mod:`tminus.steps.registry`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import StepBase

__all__ = ["Compensation", "StepContext", "StepKind", "StepOutcome"]


@dataclass
class StepOutcome:
    """What a step produced: success, captured output, artifacts for later steps."""

    ok: bool
    output: str = ""
    error: str | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    waiting: str | None = None  # set when the step cannot finish until a person acts
    #: set when the step stopped without a verdict (a canary's analysis had no data): the
    #: deploy pauses whatever the phase's ``on_failure``; ``tminus resume`` runs the step again.
    pause: str | None = None


@dataclass
class Compensation:
    """An undo to run on rollback, as a step. ``partial_ok``: run it even if the step failed
    part-way (maintenance, traffic, release switch), because part of its effect may stand."""

    step: StepBase
    partial_ok: bool = False


@dataclass
class StepContext:
    """What a step may use: resolved values, output, artifacts, approvals, the deploy's ids."""

    deploy_id: str
    plan: Plan
    resolver: Resolver
    key: str
    phase: int
    state_dir: Path
    log: Callable[[str], None]
    emit: Callable[[str, str, dict[str, Any] | None], None]
    approvals_for: Callable[[str], list[dict[str, Any]]]
    services: dict[str, Any] = field(default_factory=dict)
    notify: Callable[[str, str, list[str]], Awaitable[None]] | None = None


class StepKind(Protocol):
    """One module per kind implements this."""

    kind: ClassVar[str]

    async def execute(self, step: Any, ctx: StepContext) -> StepOutcome:
        """Do the step. Return an outcome; raise only for bugs."""
        ...

    def compensation(self, step: Any, ctx: StepContext) -> Compensation | None:
        """The built-in undo of this step, if it has one (besides the plan's ``undo:``)."""
        ...

    def describe(self, step: Any, resolver: Resolver) -> str:
        """One line for dry runs and logs: what would run, values resolved, secrets masked."""
        ...


#: Optional, duck-typed: a kind may also define
#: ``preflight(step, plan, resolver, state_dir) -> list[str]``, problems found before the
#: deploy starts (a missing tool naming its Debian package, a disk too small for a backup).
