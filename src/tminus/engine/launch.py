"""Setting up a deploy's run for the CLI: its options, the plan loaded and preflighted, the
store's state directory, the engine built and driven, and the final line that reports it;
also what ``start`` and ``resume`` share (checklist confirmations, a stored deploy's plan,
the success metrics due)."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tminus import runloop
from tminus.engine.engine import Engine
from tminus.engine.prepare import make_resolver, state_dir_of
from tminus.engine.program import Selection, build_program, select_phases, split_overrides
from tminus.engine.reporter import Reporter, make_reporter
from tminus.errors import PlanError, PreflightFailed
from tminus.plan.interpolate import Resolver
from tminus.plan.loader import load_plan, load_plan_text
from tminus.plan.model import Plan
from tminus.plan.problems import format_problems
from tminus.plan.walk import iter_steps
from tminus.states import DeployState
from tminus.steps.registry import implemented_kinds, kind_of
from tminus.store.store import Store

__all__ = ["RunOptions", "record_outside_window", "window_problem"]


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
    #: ``--outside-window REASON``: run although now is outside the plan's window (recorded).
    outside_window: str | None = None
    #: ``tminus serve``'s workers: SIGTERM pauses the deploy before its next step (handover).
    handover_on_sigterm: bool = False


def _selection(plan: Plan, opts: RunOptions) -> Selection | None:
    if not opts.phases:
        if opts.skip_checklist:
            raise PlanError(
                "--skip-checklist applies to a run of selected phases only",
                hint="add --phase NAME (a full run always passes the checklist gate)",
            )
        return None
    return Selection(select_phases(plan, opts.phases), opts.skip_checklist)


def window_problem(plan: Plan, at: datetime) -> str | None:
    """Why ``at`` is outside the plan's window (``window.start`` and ``duration``, read in
    ``window.timezone``), or None: inside it, or the plan has no start."""
    from zoneinfo import ZoneInfo

    w = plan.window
    if w.start is None:
        return None
    start = w.start if w.start.tzinfo else w.start.replace(tzinfo=ZoneInfo(w.timezone))
    zone = ZoneInfo(w.timezone)
    shown = f"{start.astimezone(zone):%Y-%m-%d %H:%M %Z}"
    if at < start:
        return f"the plan's window opens at {shown}; it is {at.astimezone(zone):%Y-%m-%d %H:%M %Z}"
    if w.duration is not None and at > start + w.duration:
        from tminus.plan.values import format_duration

        end = (start + w.duration).astimezone(zone)
        return (
            f"the plan's window ({shown}, {format_duration(w.duration)}) closed at {end:%H:%M %Z}"
        )
    return None


def record_outside_window(
    store: Store, deploy_id: str, opts: RunOptions, outside: str, what: str
) -> None:
    """``--outside-window REASON``: who did it, why, and which window (``what``: "runs",
    "scheduled it")."""
    store.event(
        deploy_id,
        "deploy.outside_window",
        f"{opts.operator} {what} outside the window: {opts.outside_window} ({outside})",
        data={"by": opts.operator, "reason": opts.outside_window, "window": outside},
    )


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
        kind = kind_of(site.step)
        problems += kind.preflight(site.step, plan, resolver, state_dir or Path(".tminus"))
    if problems:
        unique = list(dict.fromkeys(problems))
        raise PreflightFailed(
            "preflight failed, nothing was run:\n  " + "\n  ".join(unique),
            hint=_preflight_hint(unique),
        )


def _preflight_hint(problems: list[str]) -> str:
    """What to do about the preflight's problems: host keys apart from the rest."""
    keys = [p for p in problems if "host key" in p]
    todo = []
    if keys:
        todo.append(
            "verify each host key's fingerprint out of band and record it as its line says "
            "(ssh-keyscan; ssh-keygen -R for a changed key)"
        )
    if len(keys) < len(problems):
        todo.append("fix what the other lines say (a missing tool, disk space, a backup)")
    return "; ".join(todo) + ", then run again"


def _state_dir(store: Store) -> Path:
    return state_dir_of(store.url)


def _warn_exposed(plan: Plan, resolver: Resolver, state_dir: Path) -> None:
    """Tighten what tminus owns (a ``.tminus`` state directory, whatever the store), then warn
    on stderr about the state and backup directories still open to other users."""
    from tminus.engine.prepare import exposure_warnings
    from tminus.files import private_state_dir

    if state_dir.is_dir():
        private_state_dir(state_dir)
    for w in exposure_warnings(plan, resolver, state_dir):
        print(f"warning: {w}", file=sys.stderr, flush=True)


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
    resolver.store = store
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
    engine.handover_on_sigterm = opts.handover_on_sigterm
    if selection is not None:
        # The engine walks `program`; a selected deploy walks only its phases. Rollback needs
        # nothing more: it covers the phases that started, and only selected ones can.
        engine.program = build_program(plan, selection)
    return engine


def _drive(engine: Engine, action: str = "") -> DeployState:
    """Drive the deploy to a stop: in the calling thread's run session when one is open (the
    loop its preflight opened connections in, :mod:`tminus.runloop`), else a loop of its
    own."""
    session = runloop.current()
    try:
        if session is not None:
            return session.run(engine.drive(action))
        return asyncio.run(engine.drive(action))
    finally:
        engine.reporter.close()


def _final_message(store: Store, deploy_id: str, state: DeployState) -> str:
    from tminus.engine.status import tolerated_failures

    d = store.deploy(deploy_id)
    reason = f": {d['reason']}" if d["reason"] else ""
    failed = tolerated_failures(store.step_rows(deploy_id)) if state == "succeeded" else []
    hosts = ", ".join(f"{f['host']} ({f['title']})" for f in failed)
    tolerated = f"; {len(failed)} host failure(s) tolerated by max_fail: {hosts}" if failed else ""
    return f"deploy {deploy_id}: {state.value}{reason}{tolerated}{_metrics_note(store, d)}"


def _metrics_note(store: Store, d: dict[str, Any]) -> str:
    """The success metrics still pending (``after:``), with their due times, for a final line."""
    from tminus.engine.success import describe_pending, pending_metrics

    if "success_metrics" not in d["plan_text"]:
        return ""
    plan = load_plan_text(d["plan_text"], d["plan_path"], semantic=False).plan
    return describe_pending(d["id"], pending_metrics(plan, store.events(d["id"]), d["state"]))


def _measure_due_metrics(
    store: Store, plan: Plan, d: dict[str, Any], opts: RunOptions
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``tminus resume``: measure the deploy's success metrics that are due (see
    :mod:`tminus.engine.success`). Returns (measured now, still pending)."""
    from tminus.engine.success import measure_due, pending_metrics

    pending = pending_metrics(plan, store.events(d["id"]), d["state"])
    if not any(p["is_due"] for p in pending):
        return [], pending
    overrides, selection = split_overrides(d["overrides"])
    reporter = make_reporter(opts.quiet)
    engine = _engine(store, plan, d["plan_path"], d["id"], opts, reporter, overrides, selection)
    try:
        reporter.step("success metrics due")
        return asyncio.run(measure_due(engine))
    finally:
        reporter.close()


def _confirm(
    store: Store,
    plan: Plan,
    deploy_id: str,
    item: str,
    person: str,
    audit: dict[str, Any] | None = None,
) -> None:
    for entry in plan.checklist:
        if item in (entry.item, entry.id) and entry.check is None:
            store.add_confirmation(deploy_id, entry.item, person, audit=audit)
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


def _say(message: str) -> None:
    """A line on the console (stderr: stdout may be a pipe of results)."""
    print(message, file=sys.stderr, flush=True)
