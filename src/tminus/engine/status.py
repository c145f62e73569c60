"""Read-only views of a deploy for `tminus status`."""

from __future__ import annotations

from typing import Any

from tminus.clock import now
from tminus.engine.liveness import runner_liveness, shown_state
from tminus.engine.program import split_overrides
from tminus.engine.success import metric_states
from tminus.plan.loader import load_plan_text
from tminus.plan.model import Plan
from tminus.steps.registry import is_fleet_kind
from tminus.store.store import Store

__all__ = ["deploy_status", "host_table", "tolerated_failures"]


def host_table(store: Store, deploy_id: str, steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per host, the status (ok / failed / skipped / excluded) in each fleet step: from the
    steps' artifacts, and from the ``host.result`` events for a step that has none yet (in
    flight, or interrupted). Exclusions come from ``host.excluded`` events."""
    cols = sorted(
        (k for k, r in steps.items() if is_fleet_kind(r["kind"])),
        key=lambda k: (steps[k]["started_at"] or now(), k),
    )
    table: dict[str, dict[str, str]] = {}
    from_artifacts: set[str] = set()
    for key in cols:
        hosts = (steps[key]["artifacts"] or {}).get("hosts")
        if isinstance(hosts, dict):
            from_artifacts.add(key)
            for h, rec in hosts.items():
                table.setdefault(h, {})[key] = str((rec or {}).get("status", "?"))
    excluded: dict[str, str] = {}
    for e in store.events(deploy_id, types=("host.excluded", "host.result")):
        data = e["data"] or {}
        if e["type"] == "host.excluded" and data.get("host"):
            excluded[str(data["host"])] = str(data.get("by") or "")
        elif e["type"] == "host.result" and not data.get("hook") and data.get("host"):
            key = str(data.get("step"))
            if key in steps and key not in from_artifacts:
                table.setdefault(str(data["host"]), {})[key] = str(data.get("status"))
    for h in excluded:
        table.setdefault(h, {})
    used = [k for k in cols if any(k in row for row in table.values())]
    return {
        "steps": [{"key": k, "title": steps[k]["title"], "kind": steps[k]["kind"]} for k in used],
        "hosts": table,
        "excluded": excluded,
    }


def tolerated_failures(steps: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Hosts that failed in a fleet step which succeeded all the same (its ``max_fail``
    tolerated them): host, step key, step title, error. A deploy that succeeded with such
    hosts says so in its final line and in status."""
    out: list[dict[str, str]] = []
    for key, row in steps.items():
        if not is_fleet_kind(row["kind"]) or row["state"] not in ("succeeded", "warned"):
            continue
        hosts = (row["artifacts"] or {}).get("hosts")
        if not isinstance(hosts, dict):
            continue
        for host, rec in sorted(hosts.items()):
            if isinstance(rec, dict) and rec.get("status") == "failed":
                error = str(rec.get("error") or "")
                out.append({"host": host, "step": key, "title": row["title"], "error": error})
    return out


def deploy_status(
    store: Store, deploy_id: str, *, loaded: tuple[dict[str, Any], Plan | None] | None = None
) -> dict[str, Any]:
    """What ``tminus status`` shows of a deploy. ``loaded``: its row and plan, when the caller
    has read them already (the dashboard), so they are not read and parsed twice."""
    if loaded is not None:
        d, plan = loaded
    else:
        d = store.deploy(deploy_id)
        plan = load_plan_text(d["plan_text"], d["plan_path"], semantic=False).plan
    _, selection = split_overrides(d["overrides"])
    phase_rows = store.phase_rows(deploy_id)
    steps = store.step_rows(deploy_id)
    phases = []
    names = [p.name for p in plan.phases] if plan else [r["name"] for r in phase_rows.values()]
    for i, name in enumerate(names):
        row = phase_rows.get(i)
        estimate = plan.phases[i].estimate if plan else None
        est = estimate.total_seconds() if estimate is not None else None
        actual = None
        if row and row["started_at"]:
            actual = ((row["ended_at"] or now()) - row["started_at"]).total_seconds()
        phases.append(
            {
                "index": i,
                "name": name,
                "state": row["state"]
                if row
                else ("not selected" if selection and i not in selection.phases else "pending"),
                "estimate_s": est,
                "actual_s": actual,
            }
        )
    running = [r for r in steps.values() if r["state"] in ("running", "waiting", "failed")]
    current = None
    if running:
        r = max(running, key=lambda x: x["started_at"] or now())
        current = f"{r['title']} ({r['state']})"
    live = runner_liveness(d)
    state = shown_state(d, live)
    # What was in flight when the runner died (or is running now): step rows still running.
    in_flight = [
        {"key": k, "title": r["title"], "kind": r["kind"], "started_at": r["started_at"]}
        for k, r in sorted(steps.items(), key=lambda kv: (kv[1]["started_at"] or now(), kv[0]))
        if r["state"] == "running"
    ]
    countdown_text = None
    if d["state"] == "scheduled" and plan is not None and not phase_rows:
        from tminus.engine.scheduling import countdown

        countdown_text = countdown(d, plan, store)
    timers = [
        {"kind": x["kind"], "key": x["key"], "due_at": x["due_at"], "state": x["state"]}
        for x in store.timers(deploy_id)
        if x["kind"] != "drive" and x["state"] == "pending"
    ]
    windows = store.maintenance_windows(deploy_id)
    total = sum(((w["off_at"] or now()) - w["on_at"]).total_seconds() for w in windows)
    return {
        "id": d["id"],
        "plan": d["plan_name"],
        "environment": d["environment"],
        # "crashed": a running or rolling-back deploy whose runner is dead (derived here;
        # the store keeps the state it had, `stored_state`, from which a resume goes on).
        "state": state,
        "stored_state": d["state"],
        "runner": live.as_json() if live.has_runner else None,
        "in_flight": in_flight,
        "reason": d["reason"],
        "started_by": d["started_by"],
        "created_at": d["created_at"],
        "finished_at": d["finished_at"],
        "due_at": d["due_at"],
        # a deploy registered with `tminus schedule`, not started: what is left before T-0
        "countdown": countdown_text,
        # timers `tminus serve` will fire (notices, watch measurements, metrics due)
        "timers": timers,
        # the outbox: messages by state, and the latest failure's answer
        "notifications": _notifications(store, deploy_id),
        "current": current,
        "phases": phases,
        # `tminus run --phase`: the phases this deploy runs (1-based numbers), or None for all
        "selection": None if selection is None or plan is None else selection.shown(plan),
        "steps": [
            {
                "key": k,
                "title": r["title"],
                "state": r["state"],
                "attempts": r["attempts"],
                "started_at": r["started_at"],
                "ended_at": r["ended_at"],
                "error": r["error"],
            }
            for k, r in steps.items()
        ],
        "fleet": host_table(store, deploy_id, steps),
        # hosts a fleet step's max_fail tolerated: the step succeeded, these hosts did not
        "failed_hosts": tolerated_failures(steps),
        # per success metric: measured (result), pending (due_at), cancelled, not yet, no check
        "success_metrics": metric_states(
            plan, _metric_events(store, deploy_id, plan), str(d["state"])
        ),
        "maintenance": {
            "total_s": total,
            "on_now": any(w["off_at"] is None for w in windows),
            "windows": [{"on_at": w["on_at"], "off_at": w["off_at"]} for w in windows],
        },
    }


def _metric_events(store: Store, deploy_id: str, plan: Plan | None) -> list[dict[str, Any]]:
    """The events that record success metrics (none to read when the plan has none)."""
    if plan is None or not plan.success_metrics:
        return []
    return store.events(deploy_id, types=("metric.scheduled", "metric.measured", "summary"))


def _notifications(store: Store, deploy_id: str) -> dict[str, Any]:
    rows = store.outbox(deploy_id)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    failed = [r for r in rows if r["state"] == "failed"]
    last = failed[-1] if failed else None
    return {
        "counts": counts,
        "last_failure": f"{last['channel']}: {last['detail']}" if last is not None else None,
    }
