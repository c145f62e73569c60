"""Set up and drive deploys for the CLI: load and resolve the plan, open the store, take the
lock, run the engine, and map the final state to an exit code."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tminus.engine.engine import Engine
from tminus.engine.program import (
    SELECTION_KEY,
    Selection,
    build_program,
    select_phases,
    split_overrides,
)
from tminus.engine.reporter import Reporter, make_reporter
from tminus.engine.states import TERMINAL, DeployState, exit_code_for
from tminus.errors import LockHeld, NotResumable, PlanError, PreflightFailed, ResolveFailed
from tminus.plan.interpolate import ResolveError, Resolver
from tminus.plan.loader import load_plan, load_plan_text
from tminus.plan.model import Plan
from tminus.plan.problems import format_problems
from tminus.plan.walk import iter_steps
from tminus.steps.registry import get_kind, implemented_kinds
from tminus.store.store import Store

__all__ = [
    "RunOptions",
    "approve",
    "default_operator",
    "dry_run",
    "dry_run_loaded",
    "make_resolver",
    "resume",
    "start",
    "start_loaded",
]


def default_operator() -> str:
    return os.environ.get("TMINUS_OPERATOR") or getpass.getuser()


@dataclass
class RunOptions:
    state_url: str | None = None
    operator: str = ""
    confirms: tuple[str, ...] = ()
    overrides: dict[str, str] | None = None
    reason: str | None = None
    force_unlock: bool = False
    quiet: bool = False
    interactive: bool | None = None
    #: ``resume --exclude-host``: hosts fleet steps leave alone from now on (recorded).
    exclude_hosts: tuple[str, ...] = ()
    #: ``--phase`` values (names or 1-based numbers); empty: every phase.
    phases: tuple[str, ...] = ()
    #: ``--skip-checklist``: only with ``phases``.
    skip_checklist: bool = False


def _selection(plan: Plan, opts: RunOptions) -> Selection | None:
    if not opts.phases:
        if opts.skip_checklist:
            raise PlanError(
                "--skip-checklist applies to a run of selected phases only",
                hint="add --phase NAME (a full run always passes the checklist gate)",
            )
        return None
    return Selection(select_phases(plan, opts.phases), opts.skip_checklist)


def _load(path: str) -> tuple[Plan, str]:
    result = load_plan(path)
    if not result.ok or result.plan is None:
        raise PlanError(
            "the plan has errors:\n"
            + format_problems([p for p in result.problems if p.severity == "error"])
        )
    return result.plan, result.source.text


def _preflight(
    plan: Plan,
    resolver: Resolver | None = None,
    state_dir: Path | None = None,
    selection: Selection | None = None,
) -> None:
    """Before anything runs: every kind is implemented, and each kind's own preflight (tools
    installed, disk space for backups, …) finds nothing wrong. With a selection, only the
    selected phases' steps (their undo and rollback steps included) count."""
    sites = [
        s
        for s in iter_steps(plan, operations=False)
        if selection is None or s.position.phase in selection.phases
    ]
    missing = sorted({str(getattr(s.step, "kind", "")) for s in sites} - implemented_kinds())
    if missing:
        where = "the selected phases use" if selection is not None else "this plan uses"
        raise PlanError(
            f"{where} step kinds not implemented yet: {', '.join(missing)}",
            hint="`tminus check` and `tminus render` work on it; `run` needs every kind"
            + ("" if selection is None else " of the phases it runs"),
        )
    if resolver is None:
        return
    problems: list[str] = []
    for site in sites:
        hook = getattr(get_kind(str(getattr(site.step, "kind", ""))), "preflight", None)
        if hook is not None:
            problems += hook(site.step, plan, resolver, state_dir or Path(".tminus"))
    if problems:
        unique = list(dict.fromkeys(problems))
        raise PreflightFailed(
            "preflight failed, nothing was run:\n  " + "\n  ".join(unique),
            hint="install what is missing or free disk space, then run again",
        )


def make_resolver(
    plan: Plan,
    plan_path: str,
    deploy_id: str,
    operator: str,
    overrides: dict[str, str],
    state_dir: Path,
) -> Resolver:
    builtins = {
        "deploy_id": deploy_id,
        "plan_name": plan.name,
        "plan_version": plan.version or "",
        "environment": plan.environment,
        "operator": operator,
        "plan_dir": str(Path(plan_path).resolve().parent),
        "state_dir": str(state_dir),
    }
    unknown = sorted(set(overrides) - set(plan.variables))
    if unknown:
        raise PlanError(
            f"--var names an undeclared variable: {', '.join(unknown)}",
            hint="declare it under 'variables:' in the plan",
        )
    try:
        return Resolver.for_plan(
            plan.variables,
            plan.secrets,
            builtins=builtins,
            overrides=overrides,
            base_dir=Path(plan_path).resolve().parent,
        )
    except ResolveError as exc:
        raise ResolveFailed(str(exc), hint="set it in the environment, or fix the plan") from None


def _state_dir(store: Store) -> Path:
    if store.url.startswith("sqlite:///"):
        return Path(store.url[len("sqlite:///") :]).resolve().parent
    return Path(".tminus").resolve()


def _prompt(item: str) -> bool:
    import click

    return click.confirm(f"checklist: {item} — confirmed?", default=False)


def _engine(
    store: Store,
    plan: Plan,
    plan_path: str,
    deploy_id: str,
    opts: RunOptions,
    reporter: Reporter,
    overrides: dict[str, str],
    selection: Selection | None = None,
) -> Engine:
    state_dir = _state_dir(store)
    resolver = make_resolver(plan, plan_path, deploy_id, opts.operator, overrides, state_dir)
    interactive = (
        opts.interactive if opts.interactive is not None else (os.isatty(0) and os.isatty(1))
    )
    engine = Engine(
        store=store,
        plan=plan,
        deploy_id=deploy_id,
        resolver=resolver,
        reporter=reporter,
        operator=opts.operator,
        state_dir=state_dir,
        interactive=interactive,
        prompt=_prompt,
    )
    if selection is not None:
        # The engine walks `program`; a selected deploy walks only its phases. Rollback needs
        # nothing more: it covers the phases that started, and only selected ones can.
        engine.program = build_program(plan, selection)
    return engine


def _drive(engine: Engine, action: str = "") -> DeployState:
    try:
        return asyncio.run(engine.drive(action))
    finally:
        engine.reporter.close()


def _final_message(store: Store, deploy_id: str, state: DeployState) -> str:
    d = store.deploy(deploy_id)
    reason = f": {d['reason']}" if d["reason"] else ""
    return f"deploy {deploy_id}: {state.value}{reason}"


def start(plan_path: str, opts: RunOptions) -> tuple[str, int, str]:
    plan, text = _load(plan_path)
    return start_loaded(plan, text, plan_path, opts)


def start_loaded(plan: Plan, text: str, plan_path: str, opts: RunOptions) -> tuple[str, int, str]:
    """Start a deploy of an already loaded plan (``text`` is stored as its snapshot)."""
    selection = _selection(plan, opts)
    _preflight(plan, selection=selection)
    overrides = dict(opts.overrides or {})
    # Resolve once before touching the store, so a missing secret fails with nothing started.
    early = make_resolver(plan, plan_path, "dry", opts.operator, overrides, Path(".tminus"))
    store = Store(opts.state_url)
    _preflight(plan, early, _state_dir(store), selection)
    stored: dict[str, Any] = dict(overrides)
    if selection is not None:
        stored[SELECTION_KEY] = selection.to_data()
    if not opts.force_unlock:
        store.check_lock(plan.name, plan.environment)  # fail at once, leaving no deploy behind
    deploy_id = store.create_deploy(
        plan_name=plan.name,
        environment=plan.environment,
        plan_path=str(plan_path),
        plan_text=text,
        plan_hash=hashlib.sha256(text.encode()).hexdigest(),
        started_by=opts.operator,
        overrides=stored,
        reason=opts.reason,
    )
    if selection is not None:
        store.event(
            deploy_id,
            "deploy.selection",
            f"selected by {opts.operator}: {selection.describe(plan)}",
            data=selection.shown(plan),
        )
    try:
        store.acquire_lock(
            plan.name,
            plan.environment,
            deploy_id,
            opts.operator,
            opts.reason,
            force=opts.force_unlock,
        )
    except LockHeld:
        store.set_deploy(
            deploy_id,
            state="failed",
            reason="could not take the lock",
            event="deploy.failed",
            message="could not take the lock",
        )
        raise
    for item in opts.confirms:
        _confirm(store, plan, deploy_id, item, opts.operator)
    reporter = make_reporter(opts.quiet)
    engine = _engine(store, plan, plan_path, deploy_id, opts, reporter, overrides, selection)
    state = _drive(engine)
    return deploy_id, exit_code_for(state), _final_message(store, deploy_id, state)


def _confirm(store: Store, plan: Plan, deploy_id: str, item: str, person: str) -> None:
    for entry in plan.checklist:
        if item in (entry.item, entry.id) and entry.check is None:
            store.add_confirmation(deploy_id, entry.item, person)
            return
    manual = [e.item for e in plan.checklist if e.check is None]
    from tminus.plan.problems import did_you_mean

    raise PlanError(
        f"--confirm: no manual checklist item '{item}'",
        hint=did_you_mean(item, manual) or ("manual items: " + "; ".join(manual)),
    )


def _load_deploy(store: Store, deploy_id: str) -> tuple[dict[str, Any], Plan]:
    d = store.deploy(deploy_id)
    result = load_plan_text(d["plan_text"], d["plan_path"])
    if result.plan is None:
        raise PlanError(
            "the stored plan of this deploy no longer loads:\n" + format_problems(result.problems)
        )
    return d, result.plan


def _runner_alive(d: dict[str, Any]) -> bool:
    """Might a runner process still be driving this deploy? Only a running or rolling-back
    deploy has one. On this host we ask the kernel about its pid; on another host we cannot
    tell, so we assume it is alive (``--force-unlock`` overrides)."""
    if d["state"] not in ("running", "rolling_back"):
        return False
    if d["host"] != socket.gethostname():
        return True
    pid = d["runner_pid"]
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resume(deploy_id: str, action: str, opts: RunOptions) -> tuple[int, str]:
    store = Store(opts.state_url)
    d, plan = _load_deploy(store, deploy_id)
    state = DeployState(d["state"])
    if state in TERMINAL:
        raise NotResumable(f"deploy {deploy_id} has ended ({state.value}); nothing to resume")
    if _runner_alive(d) and not opts.force_unlock:
        raise LockHeld(f"deploy {deploy_id} is being run by pid {d['runner_pid']} on {d['host']}")
    if opts.exclude_hosts:
        _check_exclusions(plan, d, opts, store)
        if not action and state == DeployState.PAUSED:
            action = "retry"  # re-run the paused step on the hosts left
    if (
        action
        and state != DeployState.PAUSED
        and not (
            action == "rollback"
            and state
            in (
                DeployState.PAUSED,
                DeployState.AWAITING_APPROVAL,
                DeployState.AWAITING_CONFIRMATION,
                DeployState.RUNNING,
                DeployState.SCHEDULED,
            )
        )
    ):
        raise NotResumable(
            f"--{action}-step applies to a paused deploy; {deploy_id} is {state.value}"
        )
    if state == DeployState.SCHEDULED and not action:
        from tminus.store.store import now

        if d["due_at"] is not None and now() < d["due_at"]:
            return 3, f"deploy {deploy_id} is scheduled: {d['reason']}"
    store.acquire_lock(
        plan.name, plan.environment, deploy_id, opts.operator, d["reason"], force=opts.force_unlock
    )
    for item in opts.confirms:
        _confirm(store, plan, deploy_id, item, opts.operator)
    for host in dict.fromkeys(opts.exclude_hosts):
        store.event(
            deploy_id,
            "host.excluded",
            f"{opts.operator} excluded host {host}",
            data={"host": host, "by": opts.operator},
        )
    store.event(
        deploy_id,
        "deploy.resumed",
        f"resumed by {opts.operator}" + (f" ({action})" if action else ""),
    )
    reporter = make_reporter(opts.quiet)
    overrides, selection = split_overrides(d["overrides"])
    engine = _engine(store, plan, d["plan_path"], deploy_id, opts, reporter, overrides, selection)
    final = _drive(engine, action)
    return exit_code_for(final), _final_message(store, deploy_id, final)


def _check_exclusions(plan: Plan, d: dict[str, Any], opts: RunOptions, store: Store) -> None:
    """``--exclude-host`` names hosts of the plan (its targets and inventory)."""
    from tminus.hosts.fleet import Fleet

    overrides, _ = split_overrides(d["overrides"])
    resolver = make_resolver(
        plan, d["plan_path"], d["id"], opts.operator, overrides, _state_dir(store)
    )
    known = set(Fleet(plan, resolver).inventory.hosts) | {"localhost"}
    unknown = [h for h in opts.exclude_hosts if h not in known]
    if unknown:
        from tminus.plan.problems import did_you_mean

        raise PlanError(
            f"--exclude-host: no host '{unknown[0]}' in plan '{plan.name}'",
            hint=did_you_mean(unknown[0], known) or "hosts: " + ", ".join(sorted(known)),
        )


def approve(
    deploy_id: str, role: str, person: str, comment: str | None, state_url: str | None
) -> str:
    store = Store(state_url)
    d, plan = _load_deploy(store, deploy_id)
    if DeployState(d["state"]) in TERMINAL:
        raise NotResumable(f"deploy {deploy_id} has ended ({d['state']})")
    if role not in plan.roles:
        from tminus.plan.problems import did_you_mean

        raise PlanError(
            f"no role '{role}' in plan '{plan.name}'",
            hint=did_you_mean(role, plan.roles) or "roles: " + ", ".join(plan.roles),
        )
    people = plan.roles[role].people
    if people and person not in people:
        raise PlanError(f"{person} is not in role '{role}'", hint="people: " + ", ".join(people))
    if plan.approvals.separation_of_duties and person == d["started_by"]:
        raise PlanError(f"separation of duties: {person} started {deploy_id} and cannot approve it")
    gate = "approvals"
    rows = store.step_rows(deploy_id)
    waiting = [k for k, r in rows.items() if r["state"] == "waiting"]
    if waiting:
        gate = waiting[0]
    store.add_approval(deploy_id, gate, role, person, comment)
    return f"{role} approved {deploy_id} as {person}; continue with: tminus resume {deploy_id}"


def abort(deploy_id: str, rollback: bool, opts: RunOptions) -> tuple[int, str]:
    store = Store(opts.state_url)
    d, plan = _load_deploy(store, deploy_id)
    if DeployState(d["state"]) in TERMINAL:
        raise NotResumable(f"deploy {deploy_id} has ended ({d['state']})")
    if _runner_alive(d):
        store.set_deploy(
            deploy_id,
            abort_requested=opts.operator,
            event="deploy.abort_requested",
            message=f"abort requested by {opts.operator}",
        )
        return 0, f"abort requested; the runner (pid {d['runner_pid']}) stops before its next step"
    store.set_deploy(
        deploy_id,
        abort_requested=opts.operator,
        event="deploy.abort_requested",
        message=f"abort requested by {opts.operator}",
    )
    overrides, selection = split_overrides(d["overrides"])
    reporter = make_reporter(opts.quiet)
    engine = _engine(store, plan, d["plan_path"], deploy_id, opts, reporter, overrides, selection)
    try:
        final = asyncio.run(engine.abort(rollback))
    finally:
        engine.reporter.close()
    return 0, _final_message(store, deploy_id, final)


def dry_run(plan_path: str, opts: RunOptions) -> list[str]:
    """What would run, in order, values resolved and secrets masked. Executes nothing."""
    plan, _ = _load(plan_path)
    return dry_run_loaded(plan, plan_path, opts)


def dry_run_loaded(plan: Plan, plan_path: str, opts: RunOptions) -> list[str]:
    """:func:`dry_run` for a plan already loaded."""
    selection = _selection(plan, opts)
    resolver = make_resolver(
        plan, plan_path, "<deploy-id>", opts.operator, dict(opts.overrides or {}), Path(".tminus")
    )
    resolver.artifacts = lambda step, key: f"<artifact {step}.{key}>"
    lines: list[str] = [f"dry run of plan '{plan.name}' ({plan.environment}): nothing is executed"]
    if selection is not None:
        lines.append(f"selected: {selection.describe(plan)}")
    implemented = implemented_kinds()
    for node in build_program(plan, selection):
        if node.kind == "checklist":
            item = plan.checklist[node.index]
            how = "check" if item.check is not None else "confirm"
            lines.append(f"checklist ({how}): {item.item}")
        elif node.kind == "approvals":
            lines.append(f"approvals: {', '.join(plan.approvals.required)}")
        elif node.kind == "phase_start":
            ph = plan.phases[node.phase]
            delay = f" (after {ph.after})" if ph.after else ""
            lines.append(f"phase {node.phase + 1}: {ph.name}{delay}")
        elif node.kind == "step":
            step = plan.phases[node.phase].steps[node.index]
            kind = str(getattr(step, "kind", ""))
            if kind in implemented:
                desc = get_kind(kind).describe(step, resolver)
            else:
                desc = f"({kind}: not implemented yet)"
            lines.append(f"  step [{kind}] {step.title()}: {resolver.mask(desc)}")
            for u in step.undo:
                lines.append(f"    undo: {u.title()}")
        elif node.kind == "verify":
            lines.append(f"  verify: {node.title}")
        elif node.kind == "phase_end":
            ph = plan.phases[node.phase]
            for r in ph.rollback:
                lines.append(f"  on rollback: {r.title()}")
    return [resolver.mask(line) for line in lines]
