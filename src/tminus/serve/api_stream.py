"""The API's live event stream (:mod:`tminus.serve.api`): a deploy's events as Server-Sent
Events, woken by the server's :class:`tminus.serve.hub.EventHub`."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Depends, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import Response, StreamingResponse

from tminus.serve.api_common import (
    KEEPALIVE_S,
    MAX_INT,
    _deploy_row,
    _event,
    _may,
    _server,
    router,
)
from tminus.serve.auth import Caller, caller

__all__ = ["stream"]


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
