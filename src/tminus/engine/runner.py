"""Set up and drive deploys for the CLI: load and resolve the plan, open the store, take the
lock, run the engine, and map the final state to an exit code."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tminus import work
from tminus.engine.engine import Engine
from tminus.engine.liveness import Liveness, describe_holder, runner_liveness
from tminus.engine.prepare import default_operator, make_resolver, state_dir_of
from tminus.engine.program import (
    SELECTION_KEY,
    Selection,
    build_program,
    select_phases,
    split_overrides,
)
from tminus.engine.reporter import Reporter, make_reporter
from tminus.engine.states import TERMINAL, DeployState, exit_code_for
from tminus.errors import LockHeld, NotResumable, PlanError, PreflightFailed
from tminus.plan.interpolate import Resolver
from tminus.plan.loader import load_plan, load_plan_text
from tminus.plan.model import Plan
from tminus.plan.problems import format_problems
from tminus.plan.walk import iter_steps
from tminus.steps.registry import implemented_kinds, kind_of
from tminus.store.store import Store

__all__ = [
    "DEFAULT_ROLLBACK_WINDOW",
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
    from tminus.files import private_state_dir
    from tminus.steps._data import exposure_warnings

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
    from tminus.engine.inspect import tolerated_failures

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


def start(plan_path: str, opts: RunOptions) -> tuple[str, int, str]:
    plan, text = _load(plan_path)
    return start_loaded(plan, text, plan_path, opts)


def start_loaded(plan: Plan, text: str, plan_path: str, opts: RunOptions) -> tuple[str, int, str]:
    """Start a deploy of an already loaded plan (``text`` is stored as its snapshot)."""
    selection = _selection(plan, opts)
    from tminus.store.store import now

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
        store.event(
            deploy_id,
            "deploy.outside_window",
            f"{opts.operator} runs outside the window: {opts.outside_window} ({outside})",
            data={"by": opts.operator, "reason": opts.outside_window, "window": outside},
        )
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


def _holder_check(d: dict[str, Any]) -> str | None:
    """For the store's lock functions: None when the holder's runner is dead, else who it is
    (deploy, person, host, pid, heartbeat age)."""
    live = runner_liveness(d)
    return describe_holder(d, live) if live.alive else None


def _say(message: str) -> None:
    """A line on the console (stderr: stdout may be a pipe of results)."""
    print(message, file=sys.stderr, flush=True)


def _relock(store: Store, plan: Plan, d: dict[str, Any], opts: RunOptions) -> None:
    """Re-take the plan's lock for deploy ``d`` (resume, retry); a takeover is said and the
    old holder's orphans are killed."""
    taken = store.acquire_lock(
        plan.name,
        plan.environment,
        d["id"],
        opts.operator,
        d["reason"],
        force=opts.force_unlock,
        holder_check=_holder_check,
    )
    if taken is not None:
        _took_over(store, taken, d["id"], opts.operator)


def _took_over(store: Store, taken: dict[str, Any], deploy_id: str, operator: str) -> None:
    """A lock was taken over (recorded in both deploys' logs by the store): say so on the
    console, then kill what the old holder's dead runner left running."""
    old = store.deploy(taken["deploy_id"])
    live = runner_liveness(old)
    why = live.why if live.has_runner else f"it is {old['state']}"
    _say(
        f"took over the lock of deploy {taken['deploy_id']} (held by {taken['holder']} on "
        f"{taken['host']}, pid {taken['pid']}, since "
        f"{taken['acquired_at']:%Y-%m-%d %H:%M:%S %Z}): its runner is not alive: {why}"
    )
    _kill_orphans(store, old, live, operator, also=(deploy_id,))


def _kill_orphans(
    store: Store,
    d: dict[str, Any],
    live: Liveness,
    operator: str,
    also: tuple[str, ...] = (),
) -> list[str]:
    """The runner of deploy ``d`` is dead: kill what is left of the process groups it
    started (recorded by its engine), wait until they are gone, record what was killed
    (``runner.orphans_killed``, in ``d``'s log and in those of ``also``) and print it.
    Groups of ``localhost`` are killed only if the dead runner ran on this host; groups on SSH
    hosts are killed over SSH; what cannot be reached is listed for the operator."""
    rows = store.processes(d["id"])
    if not rows:
        return []
    here = d["host"] == socket.gethostname()
    recs = [
        work.ProcRecord(r["host"], r["pid"], r["token"])
        for r in rows
        if r["host"] != "localhost" or here
    ]
    left = [f"pid {r['pid']} on {d['host']}" for r in rows if r["host"] == "localhost" and not here]
    killed, unreached = asyncio.run(_reap(store, d, recs, operator)) if recs else ([], [])
    left += unreached
    if killed or left:
        message = (
            f"runner of {d['id']} is dead ({live.why}): "
            + ("; ".join(killed) if killed else "nothing left running here")
            + (f"; not reached, check by hand: {', '.join(left)}" if left else "")
        )
        data = {"killed": killed, "left": left, "by": operator, "runner": live.as_json()}
        for deploy_id in (d["id"], *also):
            store.event(deploy_id, "runner.orphans_killed", message, data=_jsonable(data))
        _say(message)
    store.clear_processes(d["id"])
    return killed


async def _reap(
    store: Store, d: dict[str, Any], recs: list[work.ProcRecord], operator: str
) -> tuple[list[str], list[str]]:
    """Kill the recorded groups: local ones here, remote ones over SSH on their host (through
    the plan's fleet). Returns (killed, not reached)."""
    from tminus.hosts.fleet import Fleet

    remote_recs = [r for r in recs if r.host != "localhost"]
    if not remote_recs:
        return await work.reap(recs), []
    unreached: list[str] = []
    fleet: Fleet | None = None
    try:
        _, plan = _load_deploy(store, d["id"])
        overrides, _sel = split_overrides(d["overrides"])
        resolver = make_resolver(
            plan, d["plan_path"], d["id"], operator, overrides, _state_dir(store)
        )
        fleet = Fleet(plan, resolver)
    except Exception as exc:  # the plan no longer resolves: say so, kill what is local
        unreached += [f"pid {r.pid} on {r.host} ({exc})" for r in remote_recs]

    async def remote(rec: work.ProcRecord) -> bool:
        kill = getattr(fleet.host(rec.host), "kill_group", None) if fleet else None
        if kill is None:
            return False
        try:
            return bool(await kill(rec))
        except Exception as exc:  # unreachable host: the operator must check it
            unreached.append(f"pid {rec.pid} on {rec.host} ({type(exc).__name__}: {exc})")
            return False

    try:
        killed = await work.reap(recs, remote if fleet else None)
    finally:
        if fleet is not None:
            await fleet.close()
    return killed, unreached


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out[k] = _jsonable(v)
        elif hasattr(v, "isoformat"):
            out[k] = v.isoformat()
        else:
            out[k] = v
    return out


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
        from tminus.store.store import now

        if d["due_at"] is not None and now() < d["due_at"]:
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


def _ended_at(store: Store, d: dict[str, Any]) -> datetime | None:
    """When the deploy ended (or its last phase did: a scheduled or paused deploy)."""
    rows = store.phase_rows(d["id"])
    ended: datetime | None = d["finished_at"] or max(
        (r["ended_at"] for r in rows.values() if r["ended_at"] is not None), default=None
    )
    return ended


def _late(store: Store, d: dict[str, Any], plan: Plan) -> tuple[str | None, dict[str, Any] | None]:
    """Why acting on an ended deploy now is late: its rollback window closed (a message), and
    a later deploy of the same plan and environment that succeeded (its row)."""
    from tminus.store.store import now

    closed = None
    window = plan.rollback_window or DEFAULT_ROLLBACK_WINDOW
    ended = _ended_at(store, d)
    if ended is not None and now() > ended + window:
        from tminus.plan.values import format_duration

        shown = format_duration(window)
        closed = f"its rollback window ({shown}) closed at {ended + window:%Y-%m-%d %H:%M %Z}"
    later = [
        x
        for x in store.list_deploys(limit=1000)
        if x["plan_name"] == d["plan_name"]
        and x["environment"] == d["environment"]
        and x["seq"] > d["seq"]
        and x["state"] == "succeeded"
    ]
    return closed, (later[0] if later else None)


def retry_failed_hosts(
    deploy_id: str,
    force: bool,
    opts: RunOptions,
    resumed: dict[str, Any] | None = None,
) -> tuple[int, str]:
    """``tminus resume DEPLOY --retry-failed-hosts``: run each fleet step that tolerated
    failed hosts again on those hosts, in plan order, within the same deploy (see
    :mod:`tminus.engine.retry`). For a deploy that succeeded, is paused or is scheduled; refused
    after the plan's ``rollback_window`` and when a later deploy of the same plan and
    environment has succeeded since, unless ``force`` (recorded). Exit 0 when every host
    retried now succeeds (3 if the deploy still waits: paused or scheduled), 1 when one
    failed again (or a verify check failed after it). ``resumed``: the ``hosts.retry_started``
    data of a retry whose runner died, finished now."""
    from tminus.engine.inspect import tolerated_failures
    from tminus.engine.retry import describe
    from tminus.engine.retry import retry_failed_hosts as run_retry

    store = Store(opts.state_url)
    d, plan = _load_deploy(store, deploy_id)
    state = DeployState(d["state"])
    forced: list[str] = []
    if resumed is None:
        allowed = (DeployState.SUCCEEDED, DeployState.PAUSED, DeployState.SCHEDULED)
        if state not in allowed:
            raise NotResumable(
                f"deploy {deploy_id} is {state.value}: --retry-failed-hosts applies to a deploy "
                "that succeeded, is paused or is scheduled",
                hint=None
                if state in TERMINAL
                else f"let it finish or pause first (tminus status {deploy_id})",
            )
        live = runner_liveness(d)
        if live.alive:
            exc = LockHeld(f"deploy {deploy_id} is being run: {describe_holder(d, live)}")
            exc.hint = f"wait for it, or stop it: tminus abort {deploy_id}"
            raise exc
        failed = tolerated_failures(store.step_rows(deploy_id))
        if not failed:
            raise NotResumable(
                f"deploy {deploy_id} has no failed hosts to retry",
                hint=f"tminus status {deploy_id} lists the hosts of each fleet step",
            )
        closed, later = _late(store, d, plan)
        if closed:
            if not force:
                raise NotResumable(
                    f"deploy {deploy_id}: {closed}", hint="--force overrides (recorded)"
                )
            forced.append(closed)
        if later is not None:
            why = (
                f"a later deploy of {d['plan_name']} in {d['environment']} succeeded: {later['id']}"
            )
            if not force:
                raise NotResumable(
                    f"deploy {deploy_id}: {why}; retrying the older one's hosts would deploy "
                    "its version over the newer one",
                    hint="run the newer plan on those hosts, or --force (recorded)",
                )
            forced.append(why)
        prior: dict[str, Any] = {
            "state": state.value,
            "reason": d["reason"],
            "finished_at": d["finished_at"].isoformat() if d["finished_at"] else None,
            "due_at": d["due_at"].isoformat() if d["due_at"] else None,
        }
    else:
        prior = {k: resumed.get(k) for k in ("state", "reason", "finished_at", "due_at")}
        forced = list(resumed.get("forced") or [])
        _kill_orphans(store, d, runner_liveness(d), opts.operator)
    _relock(store, plan, d, opts)
    if forced and resumed is None:
        _say(f"override recorded: {'; '.join(forced)}")
    store.event(deploy_id, "deploy.resumed", f"resumed by {opts.operator} (retry failed hosts)")
    overrides, selection = split_overrides(d["overrides"])
    reporter = make_reporter(opts.quiet)
    engine = _engine(store, plan, d["plan_path"], deploy_id, opts, reporter, overrides, selection)
    try:
        final, report = asyncio.run(run_retry(engine, prior, forced))
    finally:
        engine.reporter.close()
    code = exit_code_for(final) if report.ok else 1
    return code, f"{_final_message(store, deploy_id, final)}; {describe(report)}"


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


#: How long after it ended a deploy may be rolled back when the plan does not say.
DEFAULT_ROLLBACK_WINDOW = timedelta(days=7)


def rollback(
    deploy_id: str, phases: tuple[str, ...], reason: str | None, force: bool, opts: RunOptions
) -> tuple[int, str]:
    """``tminus rollback``: undo a deploy that ended well (succeeded, scheduled for a delayed
    phase, or partly rolled back), all of it or the chosen phases, within the plan's
    ``rollback_window`` and unless a later deploy of the same plan and environment has
    succeeded since (``force`` overrides both, recorded)."""
    store = Store(opts.state_url)
    d, plan = _load_deploy(store, deploy_id)
    state = DeployState(d["state"])
    if state not in (DeployState.SUCCEEDED, DeployState.SCHEDULED, DeployState.ROLLED_BACK):
        hint = (
            f"use: tminus resume {deploy_id} --rollback"
            if state not in TERMINAL
            else "a failed or aborted deploy has already run its rollback"
        )
        raise NotResumable(
            f"deploy {deploy_id} is {state.value}: tminus rollback undoes a deploy that "
            "succeeded, is scheduled, or was partly rolled back",
            hint=hint,
        )
    rows = store.phase_rows(deploy_id)
    done = sorted(i for i, r in rows.items() if r["state"] == "succeeded")
    if phases:
        chosen = sorted(select_phases(plan, phases))
        not_done = [i for i in chosen if i not in done]
        if not_done:
            raise NotResumable(
                "nothing to roll back in phase(s) "
                + ", ".join(
                    f"{i + 1} ({rows[i]['state'] if i in rows else 'never ran'})" for i in not_done
                ),
                hint="phases that succeeded: " + (", ".join(str(i + 1) for i in done) or "none"),
            )
    else:
        chosen = done
    if not chosen:
        raise NotResumable(f"deploy {deploy_id} has no phase left to roll back")
    overrides_why: list[str] = []
    closed, later = _late(store, d, plan)
    if closed:
        if not force:
            raise NotResumable(f"deploy {deploy_id}: {closed}", hint="--force overrides (recorded)")
        overrides_why.append(closed)
    if later is not None:
        why = f"a later deploy of {d['plan_name']} in {d['environment']} succeeded: {later['id']}"
        if not force:
            raise NotResumable(
                f"deploy {deploy_id}: {why}; rolling back the older one would undo on top of it",
                hint=f"roll back {later['id']} first, or --force (recorded)",
            )
        overrides_why.append(why)
    store.acquire_lock(
        plan.name, plan.environment, deploy_id, opts.operator, reason, holder_check=_holder_check
    )
    why = reason or f"rollback requested by {opts.operator}"
    store.event(
        deploy_id,
        "rollback.requested",
        f"{opts.operator} rolls back: {why}"
        + (f" (forced: {'; '.join(overrides_why)})" if overrides_why else ""),
        data={"by": opts.operator, "phases": [i + 1 for i in chosen], "forced": overrides_why},
    )
    if overrides_why:
        print(f"override recorded: {'; '.join(overrides_why)}", file=sys.stderr, flush=True)
    overrides, selection = split_overrides(d["overrides"])
    reporter = make_reporter(opts.quiet)
    engine = _engine(store, plan, d["plan_path"], deploy_id, opts, reporter, overrides, selection)
    try:
        final = asyncio.run(engine.rollback_after(chosen, why))
    finally:
        engine.reporter.close()
    return (0 if final == DeployState.ROLLED_BACK else 1), _final_message(store, deploy_id, final)


def abort(deploy_id: str, rollback: bool, opts: RunOptions) -> tuple[int, str]:
    store = Store(opts.state_url)
    d, plan = _load_deploy(store, deploy_id)
    if d["state"] == DeployState.SUCCEEDED:
        raise NotResumable(
            f"deploy {deploy_id}: the abort arrived after the deploy succeeded; "
            "nothing was stopped",
            hint=f"to undo it, run a new deploy (see tminus log {deploy_id})",
        )
    if DeployState(d["state"]) in TERMINAL:
        raise NotResumable(f"deploy {deploy_id} has ended ({d['state']}); nothing to abort")
    live = runner_liveness(d)

    def request() -> None:
        store.set_deploy(
            deploy_id,
            abort_requested=opts.operator,
            event="deploy.abort_requested",
            message=f"abort requested by {opts.operator}" + (" (rollback)" if rollback else ""),
            event_data={"rollback": rollback, "by": opts.operator},
        )

    if live.alive:
        request()
        where = "" if d["host"] == socket.gethostname() else f" on {d['host']}"
        return 0, (
            f"abort requested; the runner (pid {d['runner_pid']}{where}) stops its current step "
            "within a second" + (" and rolls back" if rollback else "")
        )
    # No live runner: kill what a dead one left running, then stop the deploy here.
    _kill_orphans(store, d, live, opts.operator)
    request()
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
