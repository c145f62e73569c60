"""The step-kind plug-in interface: what the engine needs from a step kind, and nothing more.

A step kind executes one plan step and may name its own compensation (an undo computed
*before* it runs, so that it survives a crash). The engine knows step kinds only through this
Protocol and the registry in :mod:`tminus.steps.registry`: never by a kind's name or class.
What the engine must know of a kind (may it run again after a crash, does it apply its own
timeout and retries per host, does it open or close a maintenance span, what must be checked
before the deploy starts) each kind *declares*, as the typed capabilities of :class:`StepKind`;
:class:`StepKindBase` holds their defaults, so that a kind declares only what differs.

What a step may use of the deploy (its fleet, a check runner, routers and flag stores opened
once per step context) is :class:`Services`: typed, and the costly members (the fleet) built
on first use.

What a step does, in the dry run and on the console, is its one description (the runbook's,
:func:`tminus.plan.describe.describe_step`) shown :class:`AsRun`: values as they will run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from tminus.hosts.fleet import History, natural_key
from tminus.plan.describe import describe_step, plain
from tminus.plan.interpolate import ResolveError, Resolver
from tminus.plan.model import Plan
from tminus.plan.sqlbind import describe_sql
from tminus.plan.steps import FLEET_HOOK_VARIABLES, FLEET_HOST_VARIABLES, StepBase
from tminus.plan.values import format_duration, resolve_duration

if TYPE_CHECKING:
    from tminus.flags.base import FlagStore
    from tminus.hosts.fleet import Fleet as Fleet
    from tminus.plan.checks import CheckBase, CheckUse
    from tminus.routers.base import Router
    from tminus.sources.base import CheckResult

__all__ = [
    "AsRun",
    "Capabilities",
    "Compensation",
    "DeployFleet",
    "History",
    "Services",
    "Span",
    "StepContext",
    "StepKind",
    "StepKindBase",
    "StepOutcome",
    "natural_key",
]

#: What a step does to a maintenance span: opens it (maintenance on) or closes it (off).
Span = Literal["open", "close"]


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


async def _no_check_runner(ref: CheckBase | CheckUse) -> CheckResult:
    raise RuntimeError("this step context has no check runner (Services.run_check)")


class DeployFleet:
    """The deploy's one fleet (its hosts and one SSH connection per host), built the first
    time a step or a retry needs it, so a deploy with no fleet step builds none, and closed by
    the runner. The engine holds one; it never builds a :class:`~tminus.hosts.fleet.Fleet`
    itself."""

    def __init__(
        self,
        plan: Plan,
        resolver: Resolver,
        events: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self._args = (plan, resolver, events)
        self._fleet: Fleet | None = None

    def get(self) -> Fleet:
        if self._fleet is None:
            from tminus.hosts.fleet import Fleet

            plan, resolver, events = self._args
            self._fleet = Fleet(plan, resolver, events=events)
        return self._fleet

    async def close(self) -> None:
        if self._fleet is not None:
            await self._fleet.close()


@dataclass
class Services:
    """The deploy's services a step may use, typed. The engine gives each step context its
    own (routers and flag stores are opened once per step context); the fleet is the deploy's
    one, built on first use (by ``fleet_factory``): a deploy with no fleet step builds none.
    ``fleet`` may be set to stand in for the deploy's (``resume --retry-failed-hosts``)."""

    #: Runs a check (``wait until``, a canary's analysis, a blue/green preview).
    run_check: Callable[[CheckBase | CheckUse], Awaitable[CheckResult]] = _no_check_runner
    #: Has an operator asked to abort? (long steps look, to stop early.) None: never asked.
    abort_requested: Callable[[], bool] | None = None
    #: Builds (or returns the already built) fleet of the deploy, on first use.
    fleet_factory: Callable[[], Fleet] | None = None
    #: Routers (``targets.routers``) opened in this step context, by name.
    routers: dict[str, Router] = field(default_factory=dict)
    #: Flag stores (``targets.flag_stores``) opened in this step context, by name.
    flag_stores: dict[str, FlagStore] = field(default_factory=dict)
    #: The release id a ``release`` step chose, kept for its retries within the context.
    release_id: str | None = None
    #: True in the context of a fleet step's ``before_batch``/``after_batch`` hook.
    fleet_hook: bool = False
    _fleet: Fleet | None = field(default=None, repr=False)

    @property
    def has_fleet(self) -> bool:
        """Is there a fleet to use (built or buildable)?"""
        return self._fleet is not None or self.fleet_factory is not None

    @property
    def fleet(self) -> Fleet:
        """The deploy's fleet (built now if it was not yet), or the one set in its place."""
        if self._fleet is None:
            if self.fleet_factory is None:
                raise RuntimeError("this step context has no fleet (Services.fleet_factory)")
            self._fleet = self.fleet_factory()
        return self._fleet

    @fleet.setter
    def fleet(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def for_hook(self) -> Services:
        """The services of a fleet step's hook: the same deploy services, its own caches."""
        return Services(
            run_check=self.run_check,
            abort_requested=self.abort_requested,
            fleet_factory=self.fleet_factory,
            routers=dict(self.routers),
            flag_stores=dict(self.flag_stores),
            release_id=self.release_id,
            fleet_hook=True,
            _fleet=self._fleet,
        )


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
    services: Services = field(default_factory=Services)
    notify: Callable[[str, str, list[str]], Awaitable[None]] | None = None


class AsRun:
    """How a step about to run is shown (the dry run, the console line of a step that starts;
    a :class:`~tminus.plan.describe.Show`, the runbook's being ``AS_WRITTEN``): values
    resolved, commands exactly as they will run (each value escaped for its place), SQL with
    its bound values, nothing shortened. A value that does not resolve yet is shown as
    written; the per-host and per-batch variables of fleet steps that are not set yet as
    ``<host>``, ``<batch_hosts>``…. Nothing is masked here: the caller masks the whole line
    (``resolver.mask``), with the secrets this resolver registered."""

    brief: bool = False

    def __init__(self, resolver: Resolver) -> None:
        held = {v: f"<{v}>" for v in (*FLEET_HOST_VARIABLES, *FLEET_HOOK_VARIABLES)}
        # the same resolver (secrets, masker, artifacts), placeholders for what it lacks
        self._r = replace(resolver, variables={**held, **resolver.variables})

    def value(self, text: str) -> str:
        try:
            return self._r.resolve(text)
        except ResolveError:  # shown as written; running it reports why it cannot run
            return text

    def command(self, cmd: str | list[str]) -> str:
        try:
            if isinstance(cmd, str):
                return self._r.resolve_shell(cmd)
            return " ".join(self._r.resolve_argv(cmd))
        except ResolveError:  # shown as written; running it reports why it cannot run
            return cmd if isinstance(cmd, str) else " ".join(cmd)

    def sql(self, statements: list[str], params: dict[str, Any]) -> str:
        # The database's kind is not known here: each statement is lexed as each dialect
        # reads it, and the readings are shown when they differ.
        shown = []
        for text in statements:
            try:
                shown.append(describe_sql(text, self._r, params))
            except ResolveError:
                shown.append(text)
        return "; ".join(shown)

    def duration(self, td: timedelta) -> str:
        try:
            return format_duration(resolve_duration(td, self._r.resolve))
        except ValueError:  # a ResolveError, or not a duration: shown as written
            return format_duration(td)


class Capabilities(Protocol):
    """What the engine must know of a kind, declared, never guessed from its name (the other
    half of :class:`StepKind`; :class:`StepKindBase` holds the defaults)."""

    #: Safe to run again when it was in flight at a crash, whatever the plan says (a step
    #: whose plan sets ``idempotent: true`` is, whatever its kind).
    rerun_safe: ClassVar[bool]
    #: Applies the step's timeout and retries to each host itself (fleet kinds): the engine
    #: applies neither to the step as a whole.
    per_host: ClassVar[bool]
    #: Applies the step's timeout itself (to its command, to each host): the engine sets no
    #: time limit on the step, and its cancellation comes only from an abort.
    own_timeout: ClassVar[bool]

    def maintenance_span(self, step: Any) -> Span | None:
        """Does this step open a maintenance span (maintenance on) or close it (off)? The
        engine records the span, and guarantees it closes (at the phase's end, on rollback,
        failure and abort)."""
        ...

    def span_step(self, plan: Plan, steps: Sequence[StepBase], span: Span) -> StepBase | None:
        """A step of this kind that opens or closes a maintenance span with the settings of
        ``steps`` (the plan's steps in question, of any kind) or the plan's own; None if this
        kind has no spans, or nothing to make one of. The engine asks for one to close a span
        nothing is owed to close, and to roll a downtime phase back under maintenance."""
        ...

    def restores(self, step: Any) -> str | None:
        """What this step puts back (a backup's signature): a rollback runs no second step
        restoring the same thing. None for steps that restore nothing."""
        ...


class StepKind(Capabilities, Protocol):
    """What a kind does (one module per kind implements it, subclassing
    :class:`StepKindBase` for the defaults of the :class:`Capabilities` it does not declare)."""

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

    def preflight(self, step: Any, plan: Plan, resolver: Resolver, state_dir: Path) -> list[str]:
        """Problems found before the deploy starts (a missing tool naming its Debian package,
        a disk too small for a backup). Nothing is run if any kind finds one."""
        ...


class StepKindBase:
    """The defaults of :class:`StepKind`'s capabilities: not safe to re-run, no per-host
    policy, the engine applies the timeout, no preflight, no compensation, no maintenance
    span, restores nothing, described by the step's one description (the runbook's). A
    kind subclasses it and declares what differs."""

    rerun_safe: ClassVar[bool] = False
    per_host: ClassVar[bool] = False
    own_timeout: ClassVar[bool] = False

    def compensation(self, step: Any, ctx: StepContext) -> Compensation | None:
        return None

    def describe(self, step: Any, resolver: Resolver) -> str:
        """The step's one description (:func:`tminus.plan.describe.describe_step`, the
        runbook's words), values as they will run, secrets masked."""
        return resolver.mask(plain(describe_step(step, AsRun(resolver))))

    def preflight(self, step: Any, plan: Plan, resolver: Resolver, state_dir: Path) -> list[str]:
        return []

    def maintenance_span(self, step: Any) -> Span | None:
        return None

    def span_step(self, plan: Plan, steps: Sequence[StepBase], span: Span) -> StepBase | None:
        return None

    def restores(self, step: Any) -> str | None:
        return None
