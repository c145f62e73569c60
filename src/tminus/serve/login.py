"""The login page of ``tminus serve``'s dashboard: a token pasted in a form becomes a signed
session cookie and its CSRF cookie (:mod:`tminus.serve.auth` says how they are checked);
``/logout`` clears them."""

from __future__ import annotations

import html

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tminus.serve.auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL,
    caller,
    config_of,
    form_field,
    live_token,
    new_session,
    same_origin,
)

__all__ = ["login", "login_form", "logout", "router"]

router = APIRouter()

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tminus: log in</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}}
input[type=password]{{width:100%;padding:.5rem;box-sizing:border-box;font-family:monospace}}
button{{margin-top:1rem;padding:.5rem 1.5rem}} .error{{color:#b00020}}
</style></head><body>
<h1>tminus</h1>
<p>Paste your API token (made with <code>tminus tokens create --person NAME</code>).</p>
{error}
<form method="post" action="/login">
<label for="token">Token</label>
<input type="password" id="token" name="token" autocomplete="off" required autofocus>
<input type="hidden" name="next" value="{next}">
<button type="submit">Log in</button>
</form>
</body></html>
"""

_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "same-origin",
}


def _local_next(value: str | None) -> str:
    """Where to go after logging in: a path of this server, never another site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 0x20 for c in value):
        return "/"
    return value


def _login_page(next_path: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = _PAGE.format(error=shown, next=html.escape(_local_next(next_path), quote=True))
    return HTMLResponse(body, status_code=status, headers=_PAGE_HEADERS)


@router.get("/login", include_in_schema=False)
async def login_form(request: Request) -> HTMLResponse:
    return _login_page(request.query_params.get("next") or "/")


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Exchange a token pasted in the form for a session cookie (and its CSRF cookie)."""
    cfg = config_of(request)
    next_path = _local_next(await form_field(request, "next"))
    why = same_origin(request)
    if why is not None:  # a login forced on a victim from another site (login CSRF)
        return _login_page(next_path, f"cross-site login refused: {why}", 403)
    presented = (await form_field(request, "token") or "").strip()
    row = live_token(cfg.store, presented) if presented else None
    if row is None:
        return _login_page(next_path, "That token is not valid (unknown or revoked).", 401)
    cookie, csrf = new_session(cfg, row)
    response = RedirectResponse(next_path, status_code=303)
    secure = request.url.scheme == "https"
    age = int(SESSION_TTL.total_seconds())
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=age, httponly=True, samesite="strict", secure=secure
    )
    # Readable by the page's script (double submit: it sends it back as X-CSRF-Token).
    response.set_cookie(
        CSRF_COOKIE, csrf, max_age=age, httponly=False, samesite="strict", secure=secure
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    """End the browser's session (CSRF-checked): its cookies are cleared. A copy of the
    cookie stays valid until it expires or its token is revoked (sessions are not stored)."""
    try:
        await caller(request)
    except HTTPException as exc:
        if exc.status_code != 401:
            raise
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, samesite="strict")
    return response
