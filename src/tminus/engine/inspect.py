"""Read-only views of a deploy for `tminus status`."""

from __future__ import annotations

from typing import Any

from tminus.plan.loader import load_plan_text
from tminus.store.store import Store, now

__all__ = ["deploy_status"]


def deploy_status(store: Store, deploy_id: str) -> dict[str, Any]:
    d = store.deploy(deploy_id)
    plan = load_plan_text(d["plan_text"], d["plan_path"], semantic=False).plan
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
                "state": row["state"] if row else "pending",
                "estimate_s": est,
                "actual_s": actual,
            }
        )
    running = [r for r in steps.values() if r["state"] in ("running", "waiting", "failed")]
    current = None
    if running:
        r = max(running, key=lambda x: x["started_at"] or now())
        current = f"{r['title']} ({r['state']})"
    windows = store.maintenance_windows(deploy_id)
    total = sum(((w["off_at"] or now()) - w["on_at"]).total_seconds() for w in windows)
    return {
        "id": d["id"],
        "plan": d["plan_name"],
        "environment": d["environment"],
        "state": d["state"],
        "reason": d["reason"],
        "started_by": d["started_by"],
        "created_at": d["created_at"],
        "finished_at": d["finished_at"],
        "due_at": d["due_at"],
        "current": current,
        "phases": phases,
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
        "maintenance": {
            "total_s": total,
            "on_now": any(w["off_at"] is None for w in windows),
            "windows": [{"on_at": w["on_at"], "off_at": w["off_at"]} for w in windows],
        },
    }
