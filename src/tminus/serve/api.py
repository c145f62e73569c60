"""The HTTP API of ``tminus serve`` (``/api/v1``): the deploys of the server's store, their
events (paged, and live as Server-Sent Events), and the operator's actions: the same
operations as the CLI, through the same engine functions.

- Reads: ``GET /api/v1/deploys`` (filters ``state``, ``plan``, ``environment``; ``offset``,
  ``limit``), ``/deploys/{id}`` (what ``tminus status`` shows), ``/deploys/{id}/events``
  (``after``, ``limit``), ``/deploys/{id}/stream`` (SSE; ``Last-Event-ID`` resumes),
  ``/measurements``, ``/watch``, ``/artifacts``, ``/notifications``, ``/report``.
- Actions (``POST``): ``approve``, ``promote``, ``confirm``, ``pause``, ``resume``, ``abort``,
  ``rollback``; ``GET/POST /api/v1/plans`` lists and registers plans (by path or uploaded,
  checked first), ``POST /api/v1/plans/{plan}/{environment}/deploys`` starts one.

Who may do what is :mod:`tminus.serve.auth`'s business: every route here needs a caller, reads
need *viewer* on the deploy's plan and environment, actions *operator*, approvals *approver*
(and the plan's role rule, separation of duties included, as on the CLI). Every action is
recorded in the deploy's event log (``api.action``) with the person, the source address and
the user agent.

Actions that need a runner (resume, rollback, an abort with no live runner, a start) run in a
worker process of the server (``Server.run_for``), as the person who asked: the response
comes when the worker has ended or after :data:`EARLY_S` seconds, whichever is first (202 then:
follow the stream). An engine refusal (a deploy that has ended, a phase that does not exist)
is a 409 with the CLI's message and hint.

Handlers are coroutines: they run on the server's loop thread, the only thread that uses its
store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from tminus.serve.api_models import (
    AbortBody,
    ActionResult,
    ApproveBody,
    ConfirmBody,
    DeployList,
    EventPage,
    NotificationList,
    PlanList,
    Problem,
    PromoteBody,
    RegisterBody,
    Registered,
    ResumeBody,
    RollbackBody,
    StartBody,
    UploadBody,
)
from tminus.serve.auth import Caller, caller, require

if TYPE_CHECKING:
    from tminus.serve.server import Server
    from tminus.store import Store

__all__ = ["EARLY_S", "router"]

#: How long an action waits for its worker before answering 202 (the run goes on).
EARLY_S = 2.0
#: The longest page of deploys or events.
MAX_PAGE = 500
#: The largest offset or sequence number a request may give (a 64-bit column's range;
#: schemathesis found that a larger one reached SQLite as an OverflowError, a 500).
MAX_INT = 2**62
#: SSE: a comment line when nothing happened for this long (proxies close idle streams).
KEEPALIVE_S = 15.0


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "A plan with errors (its problems), a bad request."},
    401: {"model": Problem, "description": "No valid credentials."},
    403: {"model": Problem, "description": "No grant covers this, or a CSRF check failed."},
    404: {"model": Problem, "description": "No such deploy or plan."},
    409: {"model": Problem, "description": "Refused by the engine (the CLI's message)."},
}

router = APIRouter(prefix="/api/v1", tags=["deploys"], responses=_ERRORS)


def _server(request: Request) -> Server:
    return request.app.state.server  # type: ignore[no-any-return]


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(jsonable_encoder(body), status_code=status)


def _deploy_row(store: Store, deploy_id: str) -> dict[str, Any]:
    from tminus.errors import NotFound

    try:
        return store.deploy(deploy_id)
    except NotFound:
        raise HTTPException(404, f"no deploy '{deploy_id}'") from None


def _may(store: Store, who: Caller, permission: str, d: dict[str, Any]) -> None:
    require(store, who, permission, str(d["plan_name"]), str(d["environment"]))


def _refused(exc: Exception) -> HTTPException:
    hint = getattr(exc, "hint", None)
    return HTTPException(409, str(exc) + (f" ({hint})" if hint else ""))


def _audit(store: Store, deploy_id: str, who: Caller, action: str, detail: dict[str, Any]) -> None:
    """Every action in the deploy's event log: who, from where, with what."""
    store.event(
        deploy_id,
        "api.action",
        f"{action} by {who.person} (from {who.address or '?'})",
        data={"action": action, **detail, **who.audit()},
    )


# --------------------------------------------------------------------------------- reads


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

    store = _server(request).store
    _may(store, who, "viewer", _deploy_row(store, deploy_id))
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
    store = _server(request).store
    _may(store, who, "viewer", _deploy_row(store, deploy_id))
    rows = [_event(e) for e in store.events_after(deploy_id, after, limit)]
    return _json({"events": rows, "next": rows[-1]["seq"] if rows else after})


def _event(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k != "deploy_id"}


@router.get(
    "/deploys/{deploy_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The events, live."}},
)
async def stream(request: Request, deploy_id: str, who: Caller = Depends(caller)) -> Response:
    """The deploy's events as Server-Sent Events (``id`` = sequence number, ``data`` = the
    event as JSON, its ``type`` included; unnamed, so that one ``onmessage`` gets them all),
    from ``Last-Event-ID`` (or ``?after=``) on; a comment every 15 s when nothing happens."""
    server = _server(request)
    store = server.store
    _may(store, who, "viewer", _deploy_row(store, deploy_id))
    start = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    try:
        after = min(max(0, int(start)), MAX_INT)
    except ValueError:
        raise HTTPException(400, "Last-Event-ID must be an event's sequence number") from None
    hub = server.hub

    async def events() -> Any:
        last = after
        with hub.subscribed():
            while not hub.closed:
                rows = store.events_after(deploy_id, last, 200)
                for e in rows:
                    body = json.dumps(jsonable_encoder(_event(e)))
                    yield f"id: {e['seq']}\ndata: {body}\n\n"
                    last = int(e["seq"])
                if rows:
                    continue
                if not await hub.wait(KEEPALIVE_S):
                    yield ": keep-alive\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/deploys/{deploy_id}/measurements", response_model=dict[str, Any])
async def measurements(
    request: Request, deploy_id: str, who: Caller = Depends(caller)
) -> JSONResponse:
    """The canary's weights over time and each analysis measurement (live, from events)."""
    store = _server(request).store
    _may(store, who, "viewer", _deploy_row(store, deploy_id))
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

    store = _server(request).store
    _may(store, who, "viewer", _deploy_row(store, deploy_id))
    _, plan = load_deploy(store, deploy_id)
    return _json(sections.watch(plan, store.events(deploy_id)))


@router.get("/deploys/{deploy_id}/artifacts", response_model=dict[str, Any])
async def artifacts(
    request: Request, deploy_id: str, who: Caller = Depends(caller)
) -> JSONResponse:
    """What each step recorded (backups made, the canary's reached weights, hosts…)."""
    store = _server(request).store
    _may(store, who, "viewer", _deploy_row(store, deploy_id))
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
    store = _server(request).store
    _may(store, who, "viewer", _deploy_row(store, deploy_id))
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

    store = _server(request).store
    _may(store, who, "viewer", _deploy_row(store, deploy_id))
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


# -------------------------------------------------------------------------------- actions


def _result(store: Store, deploy_id: str, message: str, **extra: Any) -> JSONResponse:
    from tminus.engine.liveness import shown_state

    state = shown_state(store.deploy(deploy_id))
    return _json(ActionResult(deploy=deploy_id, message=message, state=state, **extra).model_dump())


async def _run(request: Request, deploy_id: str, args: list[str], who: Caller) -> JSONResponse:
    """Run ``tminus ARGS`` for the deploy in a worker, as the caller; answer when it ended or
    after EARLY_S (202)."""
    server = _server(request)
    w = await server.run_for(deploy_id, args, who.person)
    busy = server.workers.running.get(deploy_id)
    if w is None and busy is not None:
        # a run that just paused or ended may still be exiting: wait for it a little
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(busy.done), EARLY_S)
        w = await server.run_for(deploy_id, args, who.person)
    if w is None:
        raise HTTPException(
            409,
            f"deploy {deploy_id} is being run by this server already (or the server is "
            "stopping); follow its stream, or try again when it pauses",
        )
    try:
        code = await asyncio.wait_for(asyncio.shield(w.done), EARLY_S)
    except TimeoutError:
        return _json(
            ActionResult(
                deploy=deploy_id,
                message=f"tminus {args[0]} runs (worker pid {w.proc.pid if w.proc else '?'})",
                state=str(server.store.deploy(deploy_id)["state"]),
                running=True,
            ).model_dump(),
            202,
        )
    last = server.workers.last_line(w)
    if code in (2, 4):  # refused: the CLI's message says why
        raise HTTPException(409, last or f"tminus {args[0]} refused (exit {code})")
    return _result(server.store, deploy_id, last, exit_code=code)


def _sign(
    request: Request, deploy_id: str, who: Caller, role: str | None, comment: str | None, act: str
) -> JSONResponse:
    """An approval as ``role`` (for a promotion without one: the first role of the plan the
    person is in), through ``runner.approve``: the plan's signer rule and separation of
    duties apply as on the CLI."""
    from tminus.engine import runner
    from tminus.errors import TminusError

    store = _server(request).store
    d = _deploy_row(store, deploy_id)
    _may(store, who, "approver", d)
    if role is None:
        from tminus.plan.loader import load_plan_text

        plan = load_plan_text(d["plan_text"], d["plan_path"], semantic=False).plan
        mine = [n for n, r in (plan.roles if plan else {}).items() if who.person in r.people]
        if not mine:
            raise HTTPException(403, f"{who.person} is in no role of the plan: say which role")
        role = mine[0]
    try:
        message = runner.approve(
            deploy_id, role, who.person, comment, None, store=store, audit=who.audit()
        )
    except TminusError as exc:
        raise _refused(exc) from None
    _audit(store, deploy_id, who, act, {"role": role})
    return _result(store, deploy_id, message)


@router.post("/deploys/{deploy_id}/approve", response_model=ActionResult)
async def approve(
    request: Request, deploy_id: str, body: ApproveBody, who: Caller = Depends(caller)
) -> JSONResponse:
    """Sign off as ``role``: the plan's rule (the person in the role's people; separation of
    duties) applies as on the CLI. A canary holding its weight takes it as a promotion."""
    return _sign(request, deploy_id, who, body.role, body.comment, "approve")


@router.post("/deploys/{deploy_id}/promote", response_model=ActionResult)
async def promote(
    request: Request, deploy_id: str, body: PromoteBody, who: Caller = Depends(caller)
) -> JSONResponse:
    """Promote a canary holding its weight (an approval given while it holds)."""
    return _sign(request, deploy_id, who, body.role, body.comment, "promote")


@router.post("/deploys/{deploy_id}/confirm", response_model=ActionResult)
async def confirm(
    request: Request, deploy_id: str, body: ConfirmBody, who: Caller = Depends(caller)
) -> JSONResponse:
    """Confirm manual checklist items; a server continues the deploy waiting for them."""
    from tminus.engine import runner
    from tminus.errors import TminusError

    store = _server(request).store
    d = _deploy_row(store, deploy_id)
    _may(store, who, "operator", d)
    try:
        message = runner.confirm(store, deploy_id, body.items, who.person, who.audit())
    except TminusError as exc:
        raise _refused(exc) from None
    _audit(store, deploy_id, who, "confirm", {"items": body.items})
    return _result(store, deploy_id, message)


@router.post("/deploys/{deploy_id}/resume", response_model=ActionResult)
async def resume(
    request: Request, deploy_id: str, body: ResumeBody, who: Caller = Depends(caller)
) -> JSONResponse:
    """``tminus resume`` (``--retry-step``, ``--skip-step``, ``--rollback``,
    ``--exclude-host``), run by the server as the caller."""
    store = _server(request).store
    d = _deploy_row(store, deploy_id)
    _may(store, who, "operator", d)
    args = ["resume", deploy_id]
    flag = {"retry": "--retry-step", "skip": "--skip-step", "rollback": "--rollback"}
    if body.action in flag:
        args.append(flag[body.action])
    for host in body.exclude_hosts:
        args += ["--exclude-host", host]
    _audit(store, deploy_id, who, "resume", body.model_dump())
    return await _run(request, deploy_id, args, who)


@router.post("/deploys/{deploy_id}/pause", response_model=ActionResult)
async def pause(request: Request, deploy_id: str, who: Caller = Depends(caller)) -> JSONResponse:
    """Pause a running deploy before its next step: the step in flight finishes, the deploy
    is *paused* (``tminus resume`` or the dashboard's resume goes on). Only a deploy whose
    runner is alive can be asked (409 otherwise: nothing runs)."""
    from tminus.engine.liveness import runner_liveness

    store = _server(request).store
    d = _deploy_row(store, deploy_id)
    _may(store, who, "operator", d)
    if d["state"] != "running" or not runner_liveness(d).alive:
        raise HTTPException(
            409,
            f"deploy {deploy_id} is {d['state']}"
            + ("" if d["state"] != "running" else " but its runner is not alive")
            + ": only a running deploy is paused (a rollback is not paused half way)",
        )
    store.set_deploy(
        deploy_id,
        pause_requested=who.person,
        event="deploy.pause_requested",
        message=f"pause requested by {who.person}",
        event_data=who.audit(),
    )
    _audit(store, deploy_id, who, "pause", {})
    from tminus.engine import wake

    wake.wake_runner(d)  # its next step boundary reads the request at once
    return _result(
        store,
        deploy_id,
        f"pause requested; the runner (pid {d['runner_pid']}) pauses before its next step",
    )


@router.post("/deploys/{deploy_id}/abort", response_model=ActionResult)
async def abort(
    request: Request, deploy_id: str, body: AbortBody, who: Caller = Depends(caller)
) -> JSONResponse:
    """Stop the deploy (recorded as aborted), rolling back first with ``rollback``. A live
    runner is asked (it stops its current step within a second); otherwise the server runs
    ``tminus abort`` itself."""
    from tminus.engine import runner
    from tminus.errors import TminusError

    store = _server(request).store
    d = _deploy_row(store, deploy_id)
    _may(store, who, "operator", d)
    _audit(store, deploy_id, who, "abort", body.model_dump())
    try:
        message = runner.request_abort_of_live(
            store, deploy_id, body.rollback, who.person, who.audit()
        )
    except TminusError as exc:
        raise _refused(exc) from None
    if message is not None:
        return _result(store, deploy_id, message)
    return await _run(
        request, deploy_id, ["abort", deploy_id, *(["--rollback"] if body.rollback else [])], who
    )


@router.post("/deploys/{deploy_id}/rollback", response_model=ActionResult)
async def rollback(
    request: Request, deploy_id: str, body: RollbackBody, who: Caller = Depends(caller)
) -> JSONResponse:
    """``tminus rollback`` of a deploy that succeeded (or its phases), run by the server."""
    store = _server(request).store
    d = _deploy_row(store, deploy_id)
    _may(store, who, "operator", d)
    args = ["rollback", deploy_id, "--quiet"]
    for ph in body.phases:
        args += ["--phase", ph]
    if body.reason:
        args += ["--reason", body.reason]
    if body.force:
        args.append("--force")
    _audit(store, deploy_id, who, "rollback", body.model_dump())
    return await _run(request, deploy_id, args, who)


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
