"""What the modules of the HTTP API (:mod:`tminus.serve.api`) share: the router, its error
responses, the page limits, and the helpers every handler uses (the caller's grant, the
deploy's row, an engine refusal as a 409, the audit record of an action, an action's result).
Handlers are coroutines: they run on the server's loop thread, the only thread that uses its
store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from tminus.serve.api_models import ActionResult, Problem
from tminus.serve.auth import Caller, require

if TYPE_CHECKING:
    from tminus.serve.server import Server
    from tminus.store import Store

__all__ = ["EARLY_S", "KEEPALIVE_S", "MAX_INT", "MAX_PAGE", "router"]


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


def _viewer_store(request: Request, who: Caller, deploy_id: str) -> Store:
    """The server's store, once the caller may view the deploy (404 if there is none, 403 if
    no grant covers it): the preamble of every read of one deploy."""
    store = _server(request).store
    _may(store, who, "viewer", _deploy_row(store, deploy_id))
    return store


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


def _event(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if k != "deploy_id"}


def _result(store: Store, deploy_id: str, message: str, **extra: Any) -> JSONResponse:
    from tminus.engine.liveness import shown_state

    state = shown_state(store.deploy(deploy_id))
    return _json(ActionResult(deploy=deploy_id, message=message, state=state, **extra).model_dump())
