"""The countdown: ``tminus schedule`` registers a deploy to start at T-0; ``cancel`` and
``reschedule`` change it (recorded); :func:`countdown` says what is left before it starts.

A scheduled deploy is a deploy row in state *scheduled* with ``due_at`` = T-0 and a
``deploy.scheduled`` event (``{"at": T-0, "by": …}``); it holds no lock until it starts. At
T-0 ``tminus serve`` resumes it like a delayed phase: the engine runs the checklist gate and
the approvals first, so a deploy whose gates are not complete does not start a phase: it
waits *awaiting_approval* (or *awaiting_confirmation*), recorded and announced (the
``approval_needed`` rule), and the server continues it as soon as what is missing is
recorded. Approvals (``tminus approve``) and confirmations (``tminus resume DEPLOY --confirm
ITEM``) can be given before T-0.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tminus.clock import now
from tminus.engine.launch import (
    RunOptions,
    _load,
    _preflight,
    record_outside_window,
    window_problem,
)
from tminus.engine.prepare import make_resolver
from tminus.errors import NotResumable, PlanError
from tminus.plan.model import Plan
from tminus.plan.values import format_duration, parse_duration
from tminus.states import DeployState
from tminus.store.store import Store

__all__ = ["cancel", "countdown", "parse_at", "reschedule", "schedule"]


def parse_at(text: str, plan: Plan | None = None) -> datetime:
    """``--at``: ISO 8601 (a time without zone is read in the plan's ``window.timezone``),
    or ``+2h`` / ``in 2h`` from now."""
    raw = text.strip()
    rel = raw[1:] if raw.startswith("+") else raw[3:] if raw.lower().startswith("in ") else None
    if rel is not None:
        try:
            return now() + parse_duration(rel.strip())
        except ValueError as exc:
            raise PlanError(f"--at {text!r}: {exc}", hint="e.g. +2h, in 1d") from None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise PlanError(
            f"--at {text!r} is not a time", hint="ISO 8601 (2026-12-08T02:00+01:00) or +2h"
        ) from None
    if at.tzinfo is None:
        from zoneinfo import ZoneInfo

        at = at.replace(tzinfo=ZoneInfo(plan.window.timezone if plan else "UTC"))
    return at


def _window_start(plan: Plan) -> datetime | None:
    w = plan.window
    if w.start is None:
        return None
    if w.start.tzinfo is None:
        from zoneinfo import ZoneInfo

        return w.start.replace(tzinfo=ZoneInfo(w.timezone))
    return w.start


def schedule(
    plan_path: str,
    at_text: str | None,
    opts: RunOptions,
    *,
    start_now: bool = False,
    audit: dict[str, Any] | None = None,
    store: Store | None = None,
) -> tuple[str, str]:
    """``tminus schedule PLAN [--at TIME]``: register the deploy; returns (id, message).
    ``start_now``: due at once (the API's start: ``tminus serve`` runs it at its next tick,
    as it runs any deploy that is due); ``audit``: where the request came from."""
    plan, text = _load(plan_path)
    if start_now:
        at: datetime | None = now()
    else:
        at = parse_at(at_text, plan) if at_text else _window_start(plan)
    if at is None:
        raise PlanError(
            f"plan '{plan.name}' has no window.start: say when",
            hint="tminus schedule PLAN --at 2026-12-08T02:00 (or --at +2h)",
        )
    if at <= now() and not start_now:
        raise PlanError(f"T-0 ({at:%Y-%m-%d %H:%M %Z}) has passed", hint="use tminus run")
    outside = window_problem(plan, at)
    if outside and not opts.outside_window:
        raise PlanError(
            f"T-0 is outside the plan's window: {outside}",
            hint='schedule it in its window, or say why: --outside-window "REASON" (recorded)',
        )
    # Stored in UTC: a SQLite store keeps no offset, and every time tminus reads is UTC.
    at = at.astimezone(UTC)
    _preflight(plan)
    overrides = dict(opts.overrides or {})
    make_resolver(plan, plan_path, "dry", opts.operator, overrides, Path(".tminus"))
    store = store or Store(opts.state_url)
    deploy_id = store.create_deploy(
        plan_name=plan.name,
        environment=plan.environment,
        plan_path=str(plan_path),
        plan_text=text,
        plan_hash=hashlib.sha256(text.encode()).hexdigest(),
        started_by=opts.operator,
        overrides=overrides,
        reason=opts.reason,
    )
    shown = _shown(at, plan)
    store.set_deploy(
        deploy_id,
        state=DeployState.SCHEDULED.value,
        due_at=at,
        reason=f"starts at {shown} (T-0)",
        runner_pid=None,
        event="deploy.scheduled",
        message=f"scheduled by {opts.operator} to start at {shown}",
        event_data={"at": at.isoformat(), "by": opts.operator, "cwd": os.getcwd()} | (audit or {}),
    )
    if outside:
        record_outside_window(store, deploy_id, opts, outside, "scheduled it")
    from tminus.engine.launch import _confirm

    for item in opts.confirms:
        _confirm(store, plan, deploy_id, item, opts.operator, audit)
    d = store.deploy(deploy_id)
    return deploy_id, f"deploy {deploy_id} scheduled: {countdown(d, plan, store)}"


def _not_started(store: Store, deploy_id: str) -> dict[str, Any]:
    d = store.deploy(deploy_id)
    if d["state"] != DeployState.SCHEDULED.value or store.phase_rows(deploy_id):
        raise NotResumable(
            f"deploy {deploy_id} is {d['state']}"
            + (" and has started" if store.phase_rows(deploy_id) else "")
            + ": only a scheduled deploy that has not started can be cancelled or rescheduled",
            hint=f"tminus abort {deploy_id}",
        )
    if not any(e["type"] == "deploy.scheduled" for e in store.events(deploy_id)):
        raise NotResumable(
            f"deploy {deploy_id} waits for a delayed phase, not for its start",
            hint=f"tminus abort {deploy_id} or tminus rollback {deploy_id}",
        )
    return d


def cancel(deploy_id: str, reason: str | None, opts: RunOptions) -> str:
    store = Store(opts.state_url)
    _not_started(store, deploy_id)
    why = f"cancelled by {opts.operator}" + (f": {reason}" if reason else "")
    store.set_deploy(
        deploy_id,
        state=DeployState.ABORTED.value,
        reason=why,
        finished_at=now(),
        event="deploy.cancelled",
        message=why,
        event_data={"by": opts.operator},
    )
    n = store.cancel_timers(deploy_id, why)
    return f"deploy {deploy_id}: {why} ({n} timer(s) cancelled)"


def reschedule(deploy_id: str, at_text: str, opts: RunOptions) -> str:
    store = Store(opts.state_url)
    d = _not_started(store, deploy_id)
    from tminus.engine.launch import _load_deploy

    _, plan = _load_deploy(store, deploy_id)
    at = parse_at(at_text, plan).astimezone(UTC)
    if at <= now():
        raise PlanError(f"T-0 ({at:%Y-%m-%d %H:%M %Z}) has passed")
    outside = window_problem(plan, at)
    if outside and not opts.outside_window:
        raise PlanError(
            f"T-0 is outside the plan's window: {outside}",
            hint='or say why: --outside-window "REASON" (recorded)',
        )
    old = d["due_at"]
    shown = _shown(at, plan)
    store.set_deploy(
        deploy_id,
        due_at=at,
        reason=f"starts at {shown} (T-0)",
        event="deploy.rescheduled",
        message=f"rescheduled by {opts.operator} from {_shown(old, plan)} to {shown}",
        event_data={"at": at.isoformat(), "from": old.isoformat(), "by": opts.operator},
    )
    n = store.cancel_timers(deploy_id, "rescheduled", kinds=("notice", "window_start"))
    d = store.deploy(deploy_id)
    return f"deploy {deploy_id} rescheduled ({n} notice(s) replanned): {countdown(d, plan, store)}"


def _shown(at: datetime, plan: Plan) -> str:
    """A time as people of the plan read it: in ``window.timezone``."""
    from zoneinfo import ZoneInfo

    return f"{at.astimezone(ZoneInfo(plan.window.timezone)):%Y-%m-%d %H:%M %Z}"


def _in(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    if secs < 60:
        return f"{max(secs, 0)}s"
    minutes = (secs + 30) // 60  # to the nearest minute
    return format_duration(timedelta(minutes=minutes))


def missing_gates(plan: Plan, store: Store, deploy_id: str) -> list[str]:
    """What a deploy still needs before it can start: approvals and manual checklist items."""
    approved = {a["role"] for a in store.approvals(deploy_id) if a["gate"] == "approvals"}
    roles = [r for r in plan.approvals.required if r not in approved]
    confirmed = store.confirmations(deploy_id)
    items = [
        e.item
        for e in plan.checklist
        if e.check is None and not ({e.item, e.id} - {None}) & set(confirmed)
    ]
    out = []
    if roles:
        out.append(f"{len(roles)} approval(s) missing ({', '.join(roles)})")
    if items:
        out.append(f"{len(items)} checklist item(s) unconfirmed")
    return out


def countdown(d: dict[str, Any], plan: Plan, store: Store) -> str:
    """``starts in 1d3h (2026-12-08 02:00 UTC); 2 approval(s) missing (…)``."""
    due = d["due_at"]
    if due is None:
        return "not scheduled"
    left = due - now()
    when = _shown(due, plan)
    head = f"starts in {_in(left)} ({when})" if left.total_seconds() > 0 else f"due since {when}"
    gaps = missing_gates(plan, store, d["id"])
    return head + ("; " + "; ".join(gaps) if gaps else "; gates complete")
