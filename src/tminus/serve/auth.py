"""Who may do what on ``tminus serve``'s HTTP side: who the caller is, and what they may do.

**Who** (:func:`caller`, a FastAPI dependency; 401 with a JSON ``detail`` otherwise), from the
first of:

1. ``Authorization: Bearer TOKEN``: an API token made by ``tminus tokens create`` (stored
   hashed, compared in constant time by :mod:`tminus.security`; a revoked one is refused);
2. the trusted header (``tminus serve --trusted-header X-Forwarded-User``), only when the
   server was told to trust one: an OIDC proxy in front (oauth2-proxy) names the person;
3. the session cookie ``tminus_session`` made by ``POST /login`` from a token pasted in the
   login form: signed (HMAC-SHA256 with the store's ``session`` key, shared by every server of
   the store), HttpOnly, SameSite=Strict, valid :data:`SESSION_TTL`, and only while the token
   it was made from is not revoked.

**CSRF.** A browser sends cookies (and the proxy's cookie, so the trusted header) by itself:
every unsafe request (POST, PUT, PATCH, DELETE) authenticated by a session or the trusted
header must come from a page of this server (its ``Origin``, or else its ``Referer``, names
the ``Host`` it was sent to) and carry the CSRF token (:func:`csrf_token`, an HMAC of the
session) in the ``X-CSRF-Token`` header or the ``csrf_token`` form field; for a session the
``tminus_csrf`` cookie must hold the same value too (double submit). A Bearer request is
exempt: no browser adds that header by itself.

**What** (:func:`require`, :func:`allowed`): a grant (``tminus access grant``) gives a person
``viewer``, ``operator`` or ``approver`` on a plan and an environment (``*`` = all). Operators
and approvers may view; operating and approving need their own grant. No grant that covers
(plan, environment) → 403 with the reason.

The server's loop thread is the only one that uses its store: every store call here is
synchronous and short, made from ``async`` code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import HTTPException, Request

from tminus.clock import now
from tminus.security import MIN_TOKEN_BYTES, hash_token, verify_token
from tminus.store.access import PERMISSIONS, valid_person

if TYPE_CHECKING:
    from tminus.store.store import Store

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "SESSION_TTL",
    "Access",
    "Caller",
    "access",
    "allowed",
    "caller",
    "config_of",
    "configure",
    "csrf_token",
    "form_field",
    "live_token",
    "new_session",
    "page_caller",
    "require",
    "same_origin",
]

SESSION_COOKIE = "tminus_session"
CSRF_COOKIE = "tminus_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
#: How long a session lasts from its login (its token's revocation ends it sooner).
SESSION_TTL = timedelta(hours=12)

#: The grants that give each permission: operators and approvers may view.
_GIVEN_BY: dict[str, frozenset[str]] = {
    "viewer": frozenset(PERMISSIONS),
    "operator": frozenset({"operator"}),
    "approver": frozenset({"approver"}),
}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_MAX_TOKEN = 200  # longer text is not a token of ours: not even hashed
_MAX_UA = 300
_BEARER = {"WWW-Authenticate": 'Bearer realm="tminus"'}
_HAS_MULTIPART = importlib.util.find_spec("python_multipart") is not None


# --- configuration -----------------------------------------------------------------------------
class _Config:
    """What the dependencies need: the server's store and the header it trusts (if any)."""

    def __init__(self, store: Store, trusted_header: str | None) -> None:
        self.store = store
        self.trusted_header = trusted_header
        self._key: bytes | None = None

    def key(self) -> bytes:
        """The store's session key (read once per process: rotating it means restarting)."""
        if self._key is None:
            self._key = bytes.fromhex(self.store.auth_key("session"))
        return self._key

    def sign(self, purpose: str, text: str) -> str:
        mac = hmac.new(self.key(), f"{purpose}|{text}".encode(), hashlib.sha256).digest()
        return _b64(mac)


def configure(app: Any, store: Store, *, trusted_header: str | None = None) -> None:
    """Make :func:`caller` and the login routes use ``store``, and trust ``trusted_header``
    (a header name such as ``X-Forwarded-User``, or None: no header is trusted)."""
    if trusted_header is not None and not re.fullmatch(r"[A-Za-z0-9-]{1,100}", trusted_header):
        raise ValueError(f"not an HTTP header name: {trusted_header!r}")
    app.state.tminus_auth = _Config(store, trusted_header)


def config_of(request: Request) -> _Config:
    cfg = getattr(request.app.state, "tminus_auth", None)
    if not isinstance(cfg, _Config):
        raise RuntimeError("tminus.serve.auth.configure(app, store) was not called")
    return cfg


# --- who ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Caller:
    """An authenticated person and where their request came from."""

    person: str
    via: str  # "token" | "session" | "header"
    address: str | None
    user_agent: str | None

    def audit(self) -> dict[str, str | None]:
        """Who did it, for an event's data: ``by``, ``via``, ``address``, ``user_agent``."""
        return {
            "by": self.person,
            "via": self.via,
            "address": self.address,
            "user_agent": self.user_agent,
        }


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers=_BEARER)


def _forbidden(detail: str) -> HTTPException:
    return HTTPException(403, detail=detail)


def _caller(request: Request, person: str, via: str) -> Caller:
    ua = request.headers.get("user-agent")
    return Caller(
        person=person,
        via=via,
        address=request.client.host if request.client else None,
        user_agent=ua[:_MAX_UA] if ua is not None else None,
    )


async def caller(request: Request) -> Caller:
    """The person making the request (a FastAPI dependency): 401 without valid credentials,
    403 for an unsafe request of a browser session that fails the CSRF checks."""
    cfg = config_of(request)
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise _unauthorized("the Authorization header must be 'Bearer TOKEN'")
        row = live_token(cfg.store, presented.strip())
        if row is None:
            raise _unauthorized("the token is not valid (unknown or revoked)")
        return _caller(request, row["person"], "token")
    if cfg.trusted_header is not None:
        named = request.headers.get(cfg.trusted_header)
        if named is not None:
            person = valid_person(named)
            if person is None:
                raise _unauthorized(f"the {cfg.trusted_header} header names no valid person")
            await _check_unsafe(request, cfg, f"header|{person}", double_submit=False)
            return _caller(request, person, "header")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is not None:
        session = _session(cfg, cookie)
        if session is None:
            raise _unauthorized("the session has ended (expired, or its token was revoked): log in")
        await _check_unsafe(request, cfg, f"session|{session['n']}", double_submit=True)
        return _caller(request, session["p"], "session")
    raise _unauthorized(
        "authentication required: send 'Authorization: Bearer TOKEN' or log in at /login"
    )


async def page_caller(request: Request) -> Caller:
    """:func:`caller` for pages: a GET without credentials is sent to the login page (303),
    which comes back here afterwards."""
    try:
        return await caller(request)
    except HTTPException as exc:
        if exc.status_code != 401 or request.method not in ("GET", "HEAD"):
            raise
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(
            303, detail="log in", headers={"Location": "/login?next=" + quote(target, safe="")}
        ) from None


def live_token(store: Store, presented: str) -> dict[str, Any] | None:
    """The token row ``presented`` stands for, if it exists and is not revoked; its use is
    recorded (at most once a minute)."""
    if not MIN_TOKEN_BYTES <= len(presented) <= _MAX_TOKEN:
        return None
    row = store.token_by_hash(hash_token(presented))
    if row is None or not verify_token(presented, row["hash"]) or row["revoked_at"] is not None:
        return None
    store.touch_token(row["id"], row["last_used_at"])
    return row


# --- sessions -----------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_session(cfg: _Config, token: dict[str, Any]) -> tuple[str, str]:
    """A session cookie for ``token``'s person, and its CSRF token."""
    nonce = secrets.token_urlsafe(16)
    expires = int((now() + SESSION_TTL).timestamp())
    payload = _b64(
        json.dumps({"t": token["id"], "p": token["person"], "n": nonce, "e": expires}).encode()
    )
    return f"v1.{payload}.{cfg.sign('session', payload)}", cfg.sign("csrf", f"session|{nonce}")


def _session_payload(cfg: _Config, cookie: str) -> dict[str, Any] | None:
    """The payload of a session cookie this store signed and that has not expired."""
    version, _, rest = cookie.partition(".")
    payload, _, mac = rest.partition(".")
    if version != "v1" or not payload or not mac or len(cookie) > 1000:
        return None
    if not hmac.compare_digest(cfg.sign("session", payload).encode(), mac.encode()):
        return None
    try:
        data = json.loads(_unb64(payload))
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("e"), int):
        return None
    if data["e"] <= now().timestamp():
        return None
    return data


def _session(cfg: _Config, cookie: str) -> dict[str, Any] | None:
    """A valid session: signed, not expired, its token not revoked and still the person's."""
    data = _session_payload(cfg, cookie)
    if data is None or not isinstance(data.get("t"), int):
        return None
    token = cfg.store.token(data["t"])
    if token is None or token["revoked_at"] is not None or token["person"] != data.get("p"):
        return None
    cfg.store.touch_token(token["id"], token["last_used_at"])
    return data


def csrf_token(request: Request) -> str:
    """The CSRF token a page of this request puts in its forms (field ``csrf_token``) or
    sends as ``X-CSRF-Token``; empty when the request has no session nor trusted header (a
    Bearer client needs none)."""
    cfg = config_of(request)
    if cfg.trusted_header is not None:
        person = valid_person(request.headers.get(cfg.trusted_header) or "")
        if person is not None and request.headers.get("authorization") is None:
            return cfg.sign("csrf", f"header|{person}")
    cookie = request.cookies.get(SESSION_COOKIE)
    data = _session_payload(cfg, cookie) if cookie else None
    if data is None or not isinstance(data.get("n"), str):
        return ""
    return cfg.sign("csrf", f"session|{data['n']}")


async def form_field(request: Request, name: str) -> str | None:
    """A field of a form body (urlencoded; multipart too when python-multipart is there)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return None
    if _HAS_MULTIPART:
        value = (await request.form()).get(name)
        return value if isinstance(value, str) else None
    if ctype != "application/x-www-form-urlencoded":
        return None
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=200)
    values = fields.get(name)
    return values[0] if values else None


def _netloc(url_or_host: str, scheme: str) -> str:
    """``host[:port]`` lower-cased, without the scheme's default port."""
    host = url_or_host.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    return host[: -len(default)] if default and host.endswith(default) else host


def same_origin(request: Request) -> str | None:
    """Why the request is not from a page of this server, or None if it is: its Origin (or
    else its Referer) must name the Host it was sent to."""
    host = request.headers.get("host")
    if not host:
        return "the request has no Host header"
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return "the request has neither Origin nor Referer (a browser sends one)"
    if source == "null":
        return "the request's Origin is opaque ('null')"
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"the request's origin {source[:100]!r} is not an http(s) origin"
    if _netloc(parts.netloc, parts.scheme) != _netloc(host, parts.scheme):
        return (
            f"the request comes from {parts.scheme}://{parts.netloc[:100]}, not from {host[:100]}"
        )
    return None


async def _check_unsafe(
    request: Request, cfg: _Config, binding: str, *, double_submit: bool
) -> None:
    """CSRF checks of an unsafe request authenticated by the browser (session or header)."""
    if request.method in _SAFE_METHODS:
        return
    why = same_origin(request)
    if why is not None:
        raise _forbidden(f"cross-site request refused: {why}")
    presented = request.headers.get(CSRF_HEADER) or await form_field(request, CSRF_FIELD)
    if not presented:
        raise _forbidden(
            f"CSRF token missing: send it as the {CSRF_HEADER} header or the {CSRF_FIELD} field"
        )
    expected = cfg.sign("csrf", binding).encode()
    if not hmac.compare_digest(presented.encode("utf-8", "replace"), expected):
        raise _forbidden("CSRF token does not match this session: reload the page")
    if double_submit:
        cookie = request.cookies.get(CSRF_COOKIE) or ""
        if not hmac.compare_digest(cookie.encode("utf-8", "replace"), expected):
            raise _forbidden(f"CSRF cookie {CSRF_COOKIE} missing or stale: log in again")


# --- what ---------------------------------------------------------------------------------------
class Access:
    """One person's grants, read once: for a page or a list that asks many times."""

    def __init__(self, person: str, grants: list[dict[str, Any]]) -> None:
        self.person = person
        self.grants = grants

    def allows(self, permission: str, plan: str, environment: str) -> bool:
        given_by = _GIVEN_BY.get(permission)
        if given_by is None:
            raise ValueError(f"unknown permission {permission!r} (one of {', '.join(PERMISSIONS)})")
        return any(
            g["permission"] in given_by
            and g["plan"] in ("*", plan)
            and g["environment"] in ("*", environment)
            for g in self.grants
        )

    def why_not(self, permission: str, plan: str, environment: str) -> str:
        held = ", ".join(
            f"{g['permission']} on {g['plan']}/{g['environment']}" for g in self.grants
        )
        return (
            f"{self.person} may not act as {permission} on plan '{plan}', environment "
            f"'{environment}' ({'grants: ' + held if held else 'no grants'}; "
            f"an administrator runs: tminus access grant {self.person} {permission} "
            f"--plan {plan} --env {environment})"
        )


def access(store: Store, caller: Caller) -> Access:
    """The caller's grants, to ask :meth:`Access.allows` many times with one read."""
    return Access(caller.person, store.grants(person=caller.person))


def allowed(store: Store, caller: Caller, permission: str, plan: str, environment: str) -> bool:
    """May ``caller`` act as ``permission`` (viewer, operator, approver) on the plan and
    environment? ``*`` as a plan or environment asks for all of them (only a ``*`` grant
    covers it)."""
    return access(store, caller).allows(permission, plan, environment)


def require(store: Store, caller: Caller, permission: str, plan: str, environment: str) -> None:
    """:func:`allowed`, or HTTP 403 with the reason."""
    held = access(store, caller)
    if not held.allows(permission, plan, environment):
        raise _forbidden(held.why_not(permission, plan, environment))
