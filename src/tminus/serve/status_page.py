"""The public status page of ``tminus serve``: ``/status`` (HTML), ``/status.json``,
``/status.atom``, and the same per environment (``/status/ENV``, ``.json``, ``.atom``).

Public and read-only, with no authentication: it shows only what the plan marks public
(:mod:`tminus.serve.status_view` says what that is and builds the view).

The handlers are coroutines (they run on the server's loop thread, which alone uses its store)
and read the store with two queries (``store/status.py``); a plan's text is read and parsed
only the first time its hash is met. Answers carry ``Cache-Control: public, max-age=30`` and an
``ETag`` (``If-None-Match`` answers 304), and a Content-Security-Policy that allows no script.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tminus.clock import now
from tminus.serve.status_view import (
    ENV_MAX,
    ID_SPACE,
    MAX_AGE_S,
    SCHEMA,
    EnvironmentView,
    StatusStore,
    public_view,
)

if TYPE_CHECKING:
    from jinja2 import Environment

__all__ = ["SCHEMA", "render_atom", "render_html", "render_json", "router"]


# --- the three forms ------------------------------------------------------------------------
def render_json(view: list[EnvironmentView], generated: datetime | None = None) -> bytes:
    body = {
        "schema": SCHEMA,
        "generated_at": (generated or now()).isoformat(),
        "environments": [e.to_json() for e in view],
    }
    return json.dumps(body, indent=1, ensure_ascii=False).encode()


_TEMPLATES: list[Environment] = []


def _templates() -> Environment:
    if not _TEMPLATES:
        from jinja2 import Environment, PackageLoader, select_autoescape

        _TEMPLATES.append(
            Environment(
                loader=PackageLoader("tminus.serve", "templates"),
                autoescape=select_autoescape(["html"]),
                trim_blocks=True,
                lstrip_blocks=True,
            )
        )
    return _TEMPLATES[0]


def render_html(
    view: list[EnvironmentView], environment: str | None, generated: datetime | None = None
) -> bytes:
    """The page; its links are relative (``status/prod``, ``prod.json``), so that it works
    behind a proxy that serves it under a prefix."""
    from urllib.parse import quote

    template = _templates().get_template("status.html")
    title = f"Status: {environment}" if environment is not None else "Status"
    text = template.render(
        title=title,
        environment=environment,
        environments=view,
        here=quote(environment, safe="") if environment is not None else "status",
        quote=lambda s: quote(s, safe=""),
        generated=(generated or now()).astimezone(UTC),
    )
    return text.encode()


_ATOM = "http://www.w3.org/2005/Atom"


def _atom_time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_atom(
    view: list[EnvironmentView],
    feed_url: str,
    page_url: str,
    title: str,
    generated: datetime | None = None,
) -> bytes:
    """An Atom feed (RFC 4287): one entry per public update, per scheduled maintenance and
    per ended one; the feed's id is its own URL."""
    entries: list[tuple[datetime, str, str, str]] = []  # (updated, id, title, text)
    for env in view:
        for m in env.maintenances:
            head = f"{m.plan} ({m.environment})"
            for u in m.updates:
                entries.append((u["at"], u["id"], f"{head}: {_KIND_TITLE[u['kind']]}", u["text"]))
            if m.scheduled_at is not None and m.window is not None:
                entries.append(
                    (
                        m.scheduled_at,
                        str(uuid.uuid5(ID_SPACE, f"{m.ref}:scheduled:{m.window['start']}")),
                        f"{head}: Scheduled maintenance",
                        f"Maintenance is scheduled: {m.window['text']}.",
                    )
                )
            if m.ended_at is not None:
                entries.append(
                    (
                        m.ended_at,
                        str(uuid.uuid5(ID_SPACE, f"{m.ref}:ended")),
                        f"{head}: {m.status_text}",
                        m.note,
                    )
                )
    entries.sort(key=lambda e: e[0], reverse=True)
    ET.register_namespace("", _ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{_ATOM}}}{tag}", attrs)
        if text is not None:
            el.text = text
        return el

    feed = ET.Element(f"{{{_ATOM}}}feed")
    sub(feed, "id", feed_url)
    sub(feed, "title", title)
    sub(feed, "updated", _atom_time(entries[0][0] if entries else (generated or now())))
    author = sub(feed, "author")
    sub(author, "name", "tminus")
    sub(feed, "link", rel="self", href=feed_url, type="application/atom+xml")
    sub(feed, "link", rel="alternate", href=page_url, type="text/html")
    for updated, ref, head, text in entries:
        entry = sub(feed, "entry")
        sub(entry, "id", f"urn:uuid:{ref}")
        sub(entry, "title", head)
        sub(entry, "updated", _atom_time(updated))
        sub(entry, "link", rel="alternate", href=page_url, type="text/html")
        sub(entry, "content", text, type="text")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + bytes(ET.tostring(feed, encoding="utf-8"))


_KIND_TITLE = {
    "notice": "Scheduled maintenance",
    "started": "Maintenance started",
    "update": "Update",
    "on_hold": "On hold",
    "resolved": "Completed",
    "incident": "Incident",
}


# --- HTTP -----------------------------------------------------------------------------------
router = APIRouter()

_HEADERS = {
    "Cache-Control": f"public, max-age={MAX_AGE_S}",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _store(request: Request) -> StatusStore:
    store: StatusStore = request.app.state.server.store
    return store


#: The generation time an answer's ETag is computed with: the ETag is a weak validator of
#: everything else (the data shown), so a repeated request gets its 304 in a later second.
_TAG_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def _answer(
    request: Request, render: Callable[[datetime | None], bytes], media_type: str
) -> Response:
    """The answer ``render`` makes, or a 304 if the request names its ETag: the (weak) hash
    of the answer rendered at :data:`_TAG_TIME`. A 304 renders once, a 200 twice."""
    etag = 'W/"' + hashlib.sha256(render(_TAG_TIME)).hexdigest()[:32] + '"'
    headers = {**_HEADERS, "ETag": etag}
    wanted = [t.strip() for t in request.headers.get("if-none-match", "").split(",")]
    if etag in wanted or "*" in wanted:
        return Response(status_code=304, headers=headers)
    return Response(render(None), media_type=media_type, headers=headers)


def _not_found() -> Response:
    return Response(
        "no such status page\n", status_code=404, media_type="text/plain", headers=_HEADERS
    )


def _env_ok(environment: str) -> bool:
    return 0 < len(environment) <= ENV_MAX and environment.isprintable()


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _page(request: Request, environment: str | None) -> Response:
    view = public_view(_store(request), environment)
    return _answer(request, lambda at: render_html(view, environment, at), _HTML)


async def _json(request: Request, environment: str | None) -> Response:
    view = public_view(_store(request), environment)
    return _answer(request, lambda at: render_json(view, at), _JSON)


async def _atom(request: Request, environment: str | None) -> Response:
    from urllib.parse import quote

    base = _base(request)
    path = f"/status/{quote(environment, safe='')}" if environment is not None else "/status"
    title = f"Status: {environment}" if environment is not None else "Status"
    view = public_view(_store(request), environment)
    urls = (f"{base}{path}.atom", f"{base}{path}", title)
    return _answer(request, lambda at: render_atom(view, *urls, generated=at), _ATOM_TYPE)


_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_ATOM_TYPE = "application/atom+xml; charset=utf-8"


@router.get("/status", include_in_schema=False)
async def status_page(request: Request) -> Response:
    return await _page(request, None)


@router.get("/status.json", include_in_schema=False)
async def status_json(request: Request) -> Response:
    return await _json(request, None)


@router.get("/status.atom", include_in_schema=False)
async def status_atom(request: Request) -> Response:
    return await _atom(request, None)


# The suffixed routes first: ``/status/{environment}`` would take ``prod.json`` too.
@router.get("/status/{environment}.json", include_in_schema=False)
async def environment_json(request: Request, environment: str) -> Response:
    return await _json(request, environment) if _env_ok(environment) else _not_found()


@router.get("/status/{environment}.atom", include_in_schema=False)
async def environment_atom(request: Request, environment: str) -> Response:
    return await _atom(request, environment) if _env_ok(environment) else _not_found()


@router.get("/status/{environment}", include_in_schema=False)
async def environment_page(request: Request, environment: str) -> Response:
    return await _page(request, environment) if _env_ok(environment) else _not_found()
