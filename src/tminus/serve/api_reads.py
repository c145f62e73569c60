"""The API's reads (:mod:`tminus.serve.api`): deploys (filtered, paged), one deploy, its
events (paged), the canary's measurements, the watch, artifacts, notifications, the report and
the runbook. Each needs *viewer* on the deploy's plan and environment."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from tminus.serve.api_common import (
    MAX_INT,
    MAX_PAGE,
    _deploy_row,
    _event,
    _json,
    _may,
    _server,
    _viewer_store,
    router,
)
from tminus.serve.api_models import DeployList, EventPage, NotificationList
from tminus.serve.auth import Caller, caller

__all__ = ["list_deploys"]


@router.get("/deploys", response_model=DeployList)
async def list_deploys(
    request: Request,
    state: str | None = None,
    plan: str | None = None,
    environment: str | None = None,
    offset: int = Query(0, ge=0, le=MAX_INT),
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    who: Caller = Depends(caller),
) -> JSONResponse:
    """Deploys newest first (those the caller may view), with their shown state."""
    from tminus.engine.liveness import shown_state
    from tminus.serve.auth import access

    store = _server(request).store
    rows = store.deploy_page(
        state=state, plan=plan, environment=environment, offset=offset, limit=limit
    )
    mine = access(store, who)  # the grants read once, not once per plan on the page
    seen: dict[tuple[str, str], bool] = {}
    out = []
    for r in rows:
        key = (str(r["plan_name"]), str(r["environment"]))
        if key not in seen:
            seen[key] = mine.allows("viewer", *key)
        if seen[key]:
            out.append(_brief(r) | {"state": shown_state(r), "stored_state": r["state"]})
    return _json({"deploys": out, "offset": offset, "limit": limit})


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "plan_name", "environment", "reason", "started_by", "created_at")
    return {k: r.get(k) for k in keys} | {
        "finished_at": r.get("finished_at"),
        "due_at": r.get("due_at"),
    }


@router.get("/deploys/{deploy_id}", response_model=dict[str, Any])
async def get_deploy(
    request: Request, deploy_id: str, who: Caller = Depends(caller)
) -> JSONResponse:
    """One deploy: what ``tminus status --output json`` shows."""
    from tminus.engine.status import deploy_status

    store = _viewer_store(request, who, deploy_id)
    return _json(deploy_status(store, deploy_id))


@router.get("/deploys/{deploy_id}/events", response_model=EventPage)
async def get_events(
    request: Request,
    deploy_id: str,
    after: int = Query(0, ge=0, le=MAX_INT, description="Events after this sequence number."),
    limit: int = Query(200, ge=1, le=MAX_PAGE),
    who: Caller = Depends(caller),
) -> JSONResponse:
    """A page of the deploy's events, oldest first; ``next`` is the ``after`` of the next page."""
    store = _viewer_store(request, who, deploy_id)
    rows = [_event(e) for e in store.events_after(deploy_id, after, limit)]
    return _json({"events": rows, "next": rows[-1]["seq"] if rows else after})


@router.get("/deploys/{deploy_id}/measurements", response_model=dict[str, Any])
async def measurements(
    request: Request, deploy_id: str, who: Caller = Depends(caller)
) -> JSONResponse:
    """The canary's weights over time and each analysis measurement (live, from events)."""
    store = _viewer_store(request, who, deploy_id)
    events = store.events(
        deploy_id,
        types=(
            "canary.weight",
            "analysis.measurement",
            "analysis.warn",
            "canary.promoted",
            "canary.traffic_restored",
            "canary.restore_failed",
            "canary.paused",
        ),
    )
    weights = [
        {"at": e["ts"], "weight": (e["data"] or {}).get("weight"), "step": e["key"]}
        for e in events
        if e["type"] == "canary.weight"
    ]
    points = [
        {"at": e["ts"], "step": e["key"], **(e["data"] or {})}
        for e in events
        if e["type"] == "analysis.measurement"
    ]
    marks = [
        {"at": e["ts"], "type": e["type"], "message": e["message"], "step": e["key"]}
        for e in events
        if e["type"] not in ("canary.weight", "analysis.measurement")
    ]
    return _json({"weights": weights, "measurements": points, "events": marks})


@router.get("/deploys/{deploy_id}/watch", response_model=dict[str, Any])
async def watch(request: Request, deploy_id: str, who: Caller = Depends(caller)) -> JSONResponse:
    """The post-deployment watch: its measurements and how it ended (the report's section)."""
    from tminus.report import sections
    from tminus.report.data import load_deploy

    store = _viewer_store(request, who, deploy_id)
    _, plan = load_deploy(store, deploy_id)
    return _json(sections.watch(plan, store.events(deploy_id)))


@router.get("/deploys/{deploy_id}/artifacts", response_model=dict[str, Any])
async def artifacts(
    request: Request, deploy_id: str, who: Caller = Depends(caller)
) -> JSONResponse:
    """What each step recorded (backups made, the canary's reached weights, hosts…)."""
    store = _viewer_store(request, who, deploy_id)
    steps = store.step_rows(deploy_id)
    out = [
        {
            "key": k,
            "title": r["title"],
            "kind": r["kind"],
            "state": r["state"],
            "artifacts": r.get("artifacts"),
        }
        for k, r in steps.items()
        if r.get("artifacts")
    ]
    return _json({"steps": out})


@router.get("/deploys/{deploy_id}/notifications", response_model=NotificationList)
async def notifications(
    request: Request, deploy_id: str, who: Caller = Depends(caller)
) -> JSONResponse:
    """Every message of the deploy: channel, state, attempts, the receiver's last answer."""
    store = _viewer_store(request, who, deploy_id)
    rows = store.outbox_listing(deploy_id)
    return _json({"notifications": rows})


@router.get(
    "/deploys/{deploy_id}/report",
    response_class=Response,
    responses={
        200: {
            "content": {"text/html": {}, "text/markdown": {}, "application/json": {}},
            "description": "The after-action report.",
        }
    },
)
async def report(
    request: Request,
    deploy_id: str,
    format: Literal["html", "md", "json"] = "html",
    who: Caller = Depends(caller),
) -> Response:
    """The after-action report (``tminus report``)."""
    from tminus.report import render
    from tminus.report.data import build_report

    store = _viewer_store(request, who, deploy_id)
    text = render(build_report(store, deploy_id), format)
    media = {"html": "text/html", "md": "text/markdown", "json": "application/json"}[format]
    return Response(text, media_type=f"{media}; charset=utf-8")


@router.get(
    "/deploys/{deploy_id}/runbook",
    response_class=Response,
    responses={
        200: {"content": {"text/html": {}, "text/markdown": {}}, "description": "The runbook."}
    },
)
async def runbook(
    request: Request,
    deploy_id: str,
    format: Literal["html", "md"] = "html",
    who: Caller = Depends(caller),
) -> Response:
    """The runbook of the plan this deploy runs (as it was stored when it started)."""
    from tminus.plan.loader import load_plan_text
    from tminus.plan.render import render_html, render_markdown

    store = _server(request).store
    d = _deploy_row(store, deploy_id)
    _may(store, who, "viewer", d)
    plan = load_plan_text(d["plan_text"], d["plan_path"], semantic=False).plan
    if plan is None:
        return PlainTextResponse("the stored plan no longer loads", status_code=409)
    text = (render_html if format == "html" else render_markdown)(plan, d["plan_path"])
    return Response(
        text, media_type=("text/html" if format == "html" else "text/markdown") + "; charset=utf-8"
    )
