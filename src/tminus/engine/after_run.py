"""Acting on a deploy after its run: ``tminus rollback`` of a deploy that ended well, and
``tminus resume --retry-failed-hosts``; both refused, unless forced (recorded), once the
plan's rollback window has closed or a later deploy of the same plan and environment has
succeeded."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta
from typing import Any

from tminus.engine.launch import (
    RunOptions,
    _engine,
    _final_message,
    _load_deploy,
    _say,
)
from tminus.engine.liveness import describe_holder, runner_liveness
from tminus.engine.program import select_phases, split_overrides
from tminus.engine.reporter import make_reporter
from tminus.engine.takeover import _holder_check, _kill_orphans, _relock
from tminus.errors import LockHeld, NotResumable
from tminus.plan.model import Plan
from tminus.states import TERMINAL, DeployState, exit_code_for
from tminus.store.store import Store

__all__ = ["DEFAULT_ROLLBACK_WINDOW", "retry_failed_hosts", "rollback"]

#: How long after it ended a deploy may be rolled back when the plan does not say.
DEFAULT_ROLLBACK_WINDOW = timedelta(days=7)


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
    from tminus.clock import now

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
    from tminus.engine.retry import describe
    from tminus.engine.retry import retry_failed_hosts as run_retry
    from tminus.engine.status import tolerated_failures

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
