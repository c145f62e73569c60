"""Gathering a deploy's after-action report: one JSON-ready dict (``tminus.report/1``) that
the Markdown and HTML renderers draw. Every text in it has passed the plan's masking."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.plan.loader import load_plan_text
from tminus.report import sections, timeline
from tminus.report._fmt import iso
from tminus.report.mask import plan_masker

if TYPE_CHECKING:
    from tminus.plan.model import Plan
    from tminus.store import Store

__all__ = ["SCHEMA", "build_report", "load_deploy"]

SCHEMA = "tminus.report/1"


def load_deploy(store: Store, deploy_id: str) -> tuple[dict[str, Any], Plan | None]:
    """The deploy row (:class:`~tminus.errors.NotFound`, exit 2, for an unknown id) and its
    plan as it was run (the text recorded with the deploy), or None if it no longer loads."""
    d = store.deploy(deploy_id)
    plan = load_plan_text(d["plan_text"], d["plan_path"], semantic=False).plan
    return d, plan


def build_report(store: Store, deploy_id: str) -> dict[str, Any]:
    d, plan = load_deploy(store, deploy_id)
    events = store.events(deploy_id)
    phase_rows = store.phase_rows(deploy_id)
    steps = store.step_rows(deploy_id)
    approval_rows = store.approvals(deploy_id)
    tl = timeline.build_timeline(plan, d, phase_rows, steps)
    names = {p["index"]: p["name"] for p in tl["phases"]}
    if plan is not None:
        names |= {i: p.name for i, p in enumerate(plan.phases) if i not in names}
    raw = (d.get("overrides") or {}).get(timeline.SELECTION_KEY)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": iso(now()),
        "deploy": {
            "id": d["id"],
            "plan": d["plan_name"],
            "plan_version": plan.version if plan is not None else None,
            "environment": d["environment"],
            "state": d["state"],
            "reason": d["reason"],
            "started_by": d["started_by"],
            "created_at": iso(d["created_at"]),
            "finished_at": iso(d["finished_at"]),
            "selection": [names.get(int(i), str(i)) for i in raw.get("phases") or []]
            if isinstance(raw, dict)
            else None,
        },
        "timeline": tl,
        "downtime": sections.downtime(plan, store.maintenance_windows(deploy_id), names),
        "approvals": sections.approvals(approval_rows),
        "confirmations": sections.confirmations(store.confirmations(deploy_id)),
        "signoffs": sections.signoffs(approval_rows),
        "rollbacks": sections.rollbacks(events, steps),
        "success_metrics": sections.success_metrics(plan, events, str(d["state"])),
        "watch": sections.watch(plan, events),
        "notifications": sections.notifications(events, store.outbox(deploy_id)),
    }
    masked: dict[str, Any] = plan_masker(plan, d["plan_path"]).mask_data(report)
    return masked
