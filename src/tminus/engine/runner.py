"""Set up and drive deploys for the CLI: load and resolve the plan, open the store, take the
lock, run the engine, and map the final state to an exit code.

The entry points the CLI calls live here (``start``, ``resume``, ``approve``, ``abort``,
``dry_run``, and, re-exported, ``rollback`` and ``retry_failed_hosts``); the set-up they share
is in :mod:`tminus.engine.launch`, a dead runner's lock and orphans in
:mod:`tminus.engine.takeover`, the commands on a deploy after its run in
:mod:`tminus.engine.after_run`."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from tminus import runloop
from tminus.engine import emergency
from tminus.engine.after_run import DEFAULT_ROLLBACK_WINDOW, retry_failed_hosts, rollback
from tminus.engine.emergency import SERVER_ALIVE_S
from tminus.engine.launch import (
    RunOptions,
    _confirm,
    _drive,
    _engine,
    _final_message,
    _load,
    _load_deploy,
    _measure_due_metrics,
    _metrics_note,
    _preflight,
    _say,
    _selection,
    _state_dir,
    _warn_exposed,
    record_outside_window,
    window_problem,
)
from tminus.engine.liveness import describe_holder, runner_liveness
from tminus.engine.prepare import default_operator, make_resolver, state_dir_of
from tminus.engine.program import SELECTION_KEY, build_program, split_overrides
from tminus.engine.reporter import make_reporter
from tminus.engine.takeover import _holder_check, _kill_orphans, _relock, _took_over
from tminus.errors import LockHeld, NotResumable, PlanError
from tminus.plan.model import Plan
from tminus.states import TERMINAL, DeployState, exit_code_for
from tminus.steps.registry import implemented_kinds, kind_of
from tminus.store.store import Store

__all__ = [
    "DEFAULT_ROLLBACK_WINDOW",
    "SERVER_ALIVE_S",
    "RunOptions",
    "approve",
    "default_operator",
    "dry_run",
    "dry_run_loaded",
    "make_resolver",
    "resume",
    "retry_failed_hosts",
    "rollback",
    "start",
    "start_loaded",
    "state_dir_of",
    "window_problem",
]


def start(plan_path: str, opts: RunOptions) -> tuple[str, int, str]:
    plan, text = _load(plan_path)
    return start_loaded(plan, text, plan_path, opts)


def start_loaded(plan: Plan, text: str, plan_path: str, opts: RunOptions) -> tuple[str, int, str]:
    """Start a deploy of an already loaded plan (``text`` is stored as its snapshot). Its
    preflight and the deploy share one event loop (:func:`tminus.runloop.session`): the
    connections the host-key preflight opens are the ones the deploy uses."""
    with runloop.session():
        return _start_loaded(plan, text, plan_path, opts)


def _start_loaded(plan: Plan, text: str, plan_path: str, opts: RunOptions) -> tuple[str, int, str]:
    selection = _selection(plan, opts)
    from tminus.clock import now

    outside = window_problem(plan, now())
    if outside and not opts.outside_window:
        raise PlanError(
            outside,
            hint='run it in its window, or say why: --outside-window "REASON" (recorded)',
        )
    _preflight(plan, selection=selection)
    overrides = dict(opts.overrides or {})
    # Resolve once before touching the store, so a missing secret fails with nothing started.
    early = make_resolver(plan, plan_path, "dry", opts.operator, overrides, Path(".tminus"))
    store = Store(opts.state_url)
    early.store = store  # a restore of an earlier deploy's backup is found before anything runs
    _preflight(plan, early, _state_dir(store), selection)
    _warn_exposed(plan, early, _state_dir(store))
    stored: dict[str, Any] = dict(overrides)
    if selection is not None:
        stored[SELECTION_KEY] = selection.to_data()
    if not opts.force_unlock:  # fail at once, before anything else
        store.check_lock(plan.name, plan.environment, _holder_check)
    # The deploy row and the lock in one transaction: a run that loses the lock (to a live
    # runner, or to a concurrent start) leaves no deploy behind, and the error names the holder.
    deploy_id, taken = store.create_deploy_locked(
        plan_name=plan.name,
        environment=plan.environment,
        plan_path=str(plan_path),
        plan_text=text,
        plan_hash=hashlib.sha256(text.encode()).hexdigest(),
        started_by=opts.operator,
        overrides=stored,
        reason=opts.reason,
        force=opts.force_unlock,
        holder_check=_holder_check,
    )
    if selection is not None:
        store.event(
            deploy_id,
            "deploy.selection",
            f"selected by {opts.operator}: {selection.describe(plan)}",
            data=selection.shown(plan),
        )
    if taken is not None:
        _took_over(store, taken, deploy_id, opts.operator)
    if outside:
        record_outside_window(store, deploy_id, opts, outside, "runs")
    for item in opts.confirms:
        _confirm(store, plan, deploy_id, item, opts.operator)
    reporter = make_reporter(opts.quiet)
    engine = _engine(store, plan, plan_path, deploy_id, opts, reporter, overrides, selection)
    state = _drive(engine)
    return deploy_id, exit_code_for(state), _final_message(store, deploy_id, state)


def resume(deploy_id: str, action: str, opts: RunOptions) -> tuple[int, str]:
    store = Store(opts.state_url)
    d, plan = _load_deploy(store, deploy_id)
    state = DeployState(d["state"])
    if state == DeployState.RUNNING and not action and not runner_liveness(d).alive:
        from tminus.engine.retry import pending_retry

        unfinished = pending_retry(store.events(deploy_id))
        if unfinished is not None:  # its runner died during a --retry-failed-hosts: finish it
            _say(f"deploy {deploy_id}: finishing the retry of failed hosts its runner left")
            store.close()  # one Store per process at a time: the retry opens its own
            return retry_failed_hosts(deploy_id, False, opts, resumed=unfinished)
    if state == DeployState.SUCCEEDED and not action and not opts.exclude_hosts:
        scheduled = any(e["type"] == "metric.scheduled" for e in store.events(deploy_id))
        if scheduled:  # success metrics with `after:`: measure those due
            measured, left = _measure_due_metrics(store, plan, d, opts)
            shown = ", ".join(f"{m['name']} ({m['status']})" for m in measured)
            if measured:
                note = f"; measured now: {shown}"
            elif left:
                note = "; no success metric is due yet"
            else:
                note = "; every success metric has been measured (tminus status shows them)"
            return (3 if left else 0), _final_message(store, deploy_id, state) + note
    if state in TERMINAL:
        raise NotResumable(f"deploy {deploy_id} has ended ({state.value}); nothing to resume")
    live = runner_liveness(d)
    if not live.alive and state not in (DeployState.RUNNING, DeployState.ROLLING_BACK):
        # Metrics due since the window's last phase are measured first: they never wait for
        # a later delayed phase, nor for whatever the resume does next.
        _measure_due_metrics(store, plan, d, opts)
    if live.alive:  # --force-unlock or not: a live runner is never taken over
        exc = LockHeld(
            ("--force-unlock refused: " if opts.force_unlock else "")
            + f"deploy {deploy_id} is being run: {describe_holder(d, live)}"
        )
        exc.hint = f"wait for it, or stop it: tminus abort {deploy_id}"
        raise exc
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
        from tminus.clock import now

        if d["due_at"] is not None and now() < d["due_at"]:
            for item in opts.confirms:  # a checklist confirmed before T-0 counts at T-0
                _confirm(store, plan, deploy_id, item, opts.operator)
            note = _metrics_note(store, d)
            return 3, f"deploy {deploy_id} is scheduled: {d['reason']}{note}"
    # Before anything runs again: kill what the dead runner left running (a step's command,
    # a pg_restore…), or the resumed deploy would race its own orphans.
    _kill_orphans(store, d, live, opts.operator)
    _relock(store, plan, d, opts)
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
    from tminus.steps.base import DeployFleet

    overrides, _ = split_overrides(d["overrides"])
    resolver = make_resolver(
        plan, d["plan_path"], d["id"], opts.operator, overrides, _state_dir(store)
    )
    known = set(DeployFleet(plan, resolver).get().inventory.hosts) | {"localhost"}
    unknown = [h for h in opts.exclude_hosts if h not in known]
    if unknown:
        from tminus.plan.problems import did_you_mean

        raise PlanError(
            f"--exclude-host: no host '{unknown[0]}' in plan '{plan.name}'",
            hint=did_you_mean(unknown[0], known) or "hosts: " + ", ".join(sorted(known)),
        )


def approve(
    deploy_id: str,
    role: str,
    person: str,
    comment: str | None,
    state_url: str | None,
    *,
    store: Store | None = None,
    audit: dict[str, Any] | None = None,
) -> str:
    """Record ROLE's approval by PERSON (the CLI's ``tminus approve``, the API's approve and
    promote: ``store`` is the server's own, ``audit`` where the request came from)."""
    store = store or Store(state_url)
    d, plan = _load_deploy(store, deploy_id)
    if DeployState(d["state"]) in TERMINAL:
        raise NotResumable(f"deploy {deploy_id} has ended ({d['state']})")
    from tminus.plan.roles import signer_problem

    problem = signer_problem(plan, role, person, d["started_by"], deploy_id, "approve it")
    if problem is not None:
        raise PlanError(problem[0], hint=problem[1])
    gate = "approvals"
    rows = store.step_rows(deploy_id)
    waiting = [k for k, r in rows.items() if r["state"] == "waiting"]
    if waiting:
        gate = waiting[0]
    store.add_approval(deploy_id, gate, role, person, comment, audit=audit)
    return f"{role} approved {deploy_id} as {person}; " + _who_continues(store, deploy_id)


def confirm(
    store: Store, deploy_id: str, items: list[str], person: str, audit: dict[str, Any] | None
) -> str:
    """Confirm manual checklist items of a deploy that has not ended (the API's confirm; the
    CLI confirms with ``--confirm`` on run, schedule and resume)."""
    d, plan = _load_deploy(store, deploy_id)
    if DeployState(d["state"]) in TERMINAL:
        raise NotResumable(f"deploy {deploy_id} has ended ({d['state']})")
    for item in items:
        _confirm(store, plan, deploy_id, item, person, audit=audit)
    return f"{len(items)} item(s) of {deploy_id} confirmed by {person}; " + _who_continues(
        store, deploy_id
    )


def _who_continues(store: Store, deploy_id: str) -> str:
    """What continues a deploy after an approval or a confirmation: a live ``tminus serve`` of
    this store (it notices within a second), or the operator."""
    from datetime import timedelta

    servers = store.live_servers(timedelta(seconds=SERVER_ALIVE_S))
    if servers:
        s = servers[0]
        return f"tminus serve (pid {s['pid']} on {s['host']}) continues it when its gates are met"
    return f"continue with: tminus resume {deploy_id}"


def request_abort_of_live(
    store: Store, deploy_id: str, rollback: bool, person: str, audit: dict[str, Any] | None
) -> str | None:
    """The API's abort: when a live runner drives the deploy, record the request and wake
    the runner (it stops its current step at once when it runs on this host, and rolls back
    if asked) and say so; None when no runner is alive (then ``tminus abort`` must run: the
    server starts it in a worker). See :mod:`tminus.engine.emergency`."""
    return emergency.request_abort_of_live(store, deploy_id, rollback, person, audit)


def abort(deploy_id: str, rollback: bool, opts: RunOptions) -> tuple[int, str]:
    """``tminus abort`` in this process: a live runner is asked (and woken); with none, what
    a dead one left running is killed and the deploy is stopped here (rolled back first
    with ``rollback``). The CLI first tries :func:`tminus.engine.emergency.quick_abort`."""
    store = Store(opts.state_url)
    d, plan = _load_deploy(store, deploy_id)
    emergency.abortable(d, deploy_id)
    live = runner_liveness(d)
    if live.alive:
        woken = emergency.record_abort(store, d, rollback, opts.operator, None)
        return 0, emergency.abort_requested_text(d, rollback, woken)
    # No live runner: kill what a dead one left running, then stop the deploy here.
    _kill_orphans(store, d, live, opts.operator)
    emergency.record_abort(store, d, rollback, opts.operator, None)
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
                desc = kind_of(step).describe(step, resolver)
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
