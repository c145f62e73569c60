"""The API's actions (:mod:`tminus.serve.api`): approve, promote, confirm, resume, pause,
abort, roll back, through the engine's functions (those that need a runner in a worker of
the server, as the person who asked). Each is audited in the deploy's event log."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from tminus.serve.api_common import (
    EARLY_S,
    _audit,
    _deploy_row,
    _json,
    _may,
    _refused,
    _result,
    _server,
    router,
)
from tminus.serve.api_models import (
    AbortBody,
    ActionResult,
    ApproveBody,
    ConfirmBody,
    PromoteBody,
    ResumeBody,
    RollbackBody,
)
from tminus.serve.auth import Caller, caller

__all__ = ["approve"]


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
        # the approval's own event (``approval.given``) is the action's audit record: who,
        # from where, with what, and which action; one transaction, one commit (a second
        # ``api.action`` event cost a second WAL flush on PostgreSQL)
        message = runner.approve(
            deploy_id,
            role,
            who.person,
            comment,
            None,
            store=store,
            audit=who.audit() | {"action": act},
        )
    except TminusError as exc:
        raise _refused(exc) from None
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
