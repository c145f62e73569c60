"""The API's plans (:mod:`tminus.serve.api`): those the server knows, registered by path or
uploaded (checked first), and a deploy of one started."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from tminus.serve.api_common import _audit, _json, _refused, _server, router
from tminus.serve.api_models import (
    ActionResult,
    PlanList,
    RegisterBody,
    Registered,
    StartBody,
    UploadBody,
)
from tminus.serve.auth import Caller, caller, require

__all__ = ["start"]


@router.get("/plans", response_model=PlanList)
async def list_plans(request: Request, who: Caller = Depends(caller)) -> JSONResponse:
    """The plans this server knows (those the caller may view)."""
    from tminus.serve.auth import access

    store = _server(request).store
    mine = access(store, who)
    rows = [
        {
            k: r[k]
            for k in (
                "name",
                "environment",
                "path",
                "description",
                "registered_at",
                "registered_by",
            )
        }
        | {"may_start": mine.allows("operator", r["name"], r["environment"])}
        for r in store.registered_plans()
        if mine.allows("viewer", r["name"], r["environment"])
    ]
    return _json({"plans": rows})


@router.post("/plans", status_code=201, response_model=Registered)
async def register_plan(
    request: Request, body: RegisterBody, who: Caller = Depends(caller)
) -> JSONResponse:
    """Register a plan by its path on the server: checked first (a plan with errors is a 400
    listing its problems, and is not registered); needs *operator* on the plan's name and
    environment."""
    from tminus.errors import PlanError
    from tminus.serve.plans import check_path, record

    server = _server(request)
    try:
        checked = check_path(body.path)
    except PlanError as exc:
        raise HTTPException(400, str(exc)) from None
    require(server.store, who, "operator", checked.plan.name, checked.plan.environment)
    reg = record(server.store, server.state_dir, checked, who.person)
    return _json({"name": reg.name, "environment": reg.environment, "path": reg.path}, 201)


@router.post("/plans/upload", status_code=201, response_model=Registered)
async def upload_plan(
    request: Request, body: UploadBody, who: Caller = Depends(caller)
) -> JSONResponse:
    """Upload a plan's text: checked, kept as a private file under the state directory
    (``serve/plans/``) and registered; needs *operator* on its name and environment."""
    from tminus.errors import PlanError
    from tminus.serve.plans import check_upload, record

    server = _server(request)
    try:
        checked = check_upload(body.filename, body.text)
    except PlanError as exc:
        raise HTTPException(400, str(exc)) from None
    require(server.store, who, "operator", checked.plan.name, checked.plan.environment)
    reg = record(server.store, server.state_dir, checked, who.person)
    return _json({"name": reg.name, "environment": reg.environment, "path": reg.path}, 201)


@router.post("/plans/{plan}/{environment}/deploys", response_model=ActionResult, status_code=201)
async def start(
    request: Request, plan: str, environment: str, body: StartBody, who: Caller = Depends(caller)
) -> JSONResponse:
    """Start a deploy of a registered plan: its file is read and checked again (a plan with
    errors now is a 400), registered due now, and run by the server at its next tick, started
    by the caller."""
    from tminus.engine.launch import RunOptions
    from tminus.engine.scheduling import schedule
    from tminus.errors import PlanError, TminusError
    from tminus.serve.plans import load_checked

    server = _server(request)
    store = server.store
    require(store, who, "operator", plan, environment)
    reg = store.registered_plan(plan, environment)
    if reg is None:
        raise HTTPException(404, f"no registered plan '{plan}' for environment '{environment}'")
    try:
        loaded, _ = load_checked(reg["path"])
    except PlanError as exc:
        raise HTTPException(400, str(exc)) from None
    if (loaded.name, loaded.environment) != (plan, environment):
        raise HTTPException(
            409,
            f"{reg['path']} is now plan '{loaded.name}' for '{loaded.environment}': "
            "register it again",
        )
    opts = RunOptions(
        state_url=server.state_url,
        operator=who.person,
        confirms=tuple(body.confirm),
        overrides=dict(body.vars),
        reason=body.reason,
    )
    try:
        deploy_id, _ = schedule(
            reg["path"], None, opts, start_now=True, audit=who.audit(), store=store
        )
    except PlanError as exc:
        raise HTTPException(400, str(exc)) from None
    except TminusError as exc:
        raise _refused(exc) from None
    _audit(store, deploy_id, who, "start", {"plan": plan, "environment": environment})
    return _json(
        ActionResult(
            deploy=deploy_id,
            message=f"deploy {deploy_id} of {plan} ({environment}) starts at the server's "
            "next tick",
            state="scheduled",
        ).model_dump(),
        201,
    )
