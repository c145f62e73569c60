"""Who may do what on ``tminus serve`` (issue #17, item 3): ``tminus.serve.auth`` in a real
FastAPI app over a real store (SQLite; one test on PostgreSQL), driven through
``httpx.ASGITransport``; the log test runs a real uvicorn on a free port.

Mutations tried (each made the named tests fail, then was restored):

* ``_live_token`` without ``row["revoked_at"] is not None`` → ``test_revoked_token_is_401``.
* ``_session`` without the revocation check → ``test_revoked_token_is_401`` (session part).
* ``_session_payload`` without the expiry check → ``test_session_expires``.
* ``_session_payload`` without the signature comparison → ``test_forged_session_is_401``.
* ``_check_unsafe`` returning at once (no CSRF at all) →
  ``test_cookie_post_needs_the_csrf_token``, ``test_origin_mismatch_is_refused``,
  ``test_trusted_header_only_when_enabled``.
* ``_check_unsafe`` without the ``_same_origin`` call → ``test_origin_mismatch_is_refused``.
* ``double_submit`` ignored (no cookie comparison) →
  ``test_cookie_post_needs_the_csrf_token`` (the POST without the ``tminus_csrf`` cookie).
* ``caller`` reading the trusted header when none is configured →
  ``test_trusted_header_only_when_enabled``.
* ``_GIVEN_BY["operator"]`` = all permissions (a viewer may operate) →
  ``test_wrong_permission_is_403``.
* ``Access.allows`` ignoring the environment → ``test_grants_are_scoped_by_plan_and_env``.
* ``touch_token`` without its once-a-minute read (an UPDATE tried on every request) →
  ``test_bearer_token_and_last_used``. The UPDATE's own condition (two servers racing write
  once) is a second guard, not caught alone: removing it alone passes.
* ``login`` without its ``_same_origin`` check → ``test_login_checks_token_and_origin``.
* ``_live_token`` logging the presented token at DEBUG, or the 401 detail quoting it →
  ``test_token_never_in_logs``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from sqlalchemy import event

from tests.serve.conftest import free_port
from tminus import clock
from tminus.security import hash_token, new_token
from tminus.serve import auth
from tminus.serve import login as login_page
from tminus.serve.auth import CSRF_COOKIE, SESSION_COOKIE, Caller
from tminus.store.store import Store

T = TypeVar("T")
BASE = "http://tminus.test"
ORIGIN = {"Origin": BASE}


def run(coro: Awaitable[T]) -> T:
    async def go() -> T:
        return await coro

    return asyncio.run(go())


def make_app(store: Store, trusted_header: str | None = None) -> FastAPI:
    """A tiny app protected the way the API and the dashboard are."""
    app = FastAPI()
    auth.configure(app, store, trusted_header=trusted_header)
    app.include_router(login_page.router)

    @app.get("/deploys/{plan}/{env}")
    async def view(
        plan: str, env: str, request: Request, who: Caller = Depends(auth.caller)
    ) -> dict[str, Any]:
        auth.require(store, who, "viewer", plan, env)
        return {"person": who.person, "via": who.via, "csrf": auth.csrf_token(request)}

    @app.post("/deploys/{plan}/{env}/abort")
    async def abort(plan: str, env: str, who: Caller = Depends(auth.caller)) -> dict[str, Any]:
        auth.require(store, who, "operator", plan, env)
        return who.audit()

    @app.post("/deploys/{plan}/{env}/approve")
    async def approve(plan: str, env: str, who: Caller = Depends(auth.caller)) -> dict[str, Any]:
        auth.require(store, who, "approver", plan, env)
        return who.audit()

    @app.get("/page")
    async def page(who: Caller = Depends(auth.page_caller)) -> dict[str, str]:
        return {"person": who.person}

    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("192.0.2.7", 4711)),
        base_url=BASE,
        headers={"User-Agent": "test-agent/1"},
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/state.db")
    yield s
    s.close()


def token_for(store: Store, person: str, *grants: tuple[str, str, str]) -> tuple[int, str]:
    """A new token of ``person`` (as `tminus tokens create` makes it) and their grants."""
    token = new_token()
    token_id = store.add_token(person, hash_token(token), label=None, by="admin")
    for permission, plan, env in grants:
        store.add_grant(person, permission, plan=plan, environment=env, by="admin")
    return token_id, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(c: httpx.AsyncClient, token: str) -> httpx.Response:
    return await c.post(
        "/login",
        data={"token": token, "next": "/deploys/shop/prod"},
        headers=ORIGIN,
    )


# --- who --------------------------------------------------------------------------------------
def test_no_credentials_is_401(store: Store) -> None:
    async def go() -> None:
        async with client(make_app(store)) as c:
            r = await c.get("/deploys/shop/prod")
            assert r.status_code == 401
            assert "Bearer" in r.json()["detail"] and "/login" in r.json()["detail"]
            assert r.headers["www-authenticate"].startswith("Bearer")
            for header in ("Basic YWxpY2U6cHc=", "Bearer", "Bearer short", "Bearer " + "x" * 43):
                r = await c.get("/deploys/shop/prod", headers={"Authorization": header})
                assert r.status_code == 401, header
            r = await c.post("/deploys/shop/prod/abort")
            assert r.status_code == 401
            # a page without credentials goes to the login page, and comes back
            r = await c.get("/page?x=1")
            assert r.status_code == 303
            assert r.headers["location"] == "/login?next=%2Fpage%3Fx%3D1"

    run(go())


def test_bearer_token_and_last_used(store: Store) -> None:
    token_id, token = token_for(store, "alice", ("viewer", "*", "*"))

    async def go() -> None:
        async with client(make_app(store)) as c:
            r = await c.get("/deploys/shop/prod", headers=bearer(token))
            assert r.status_code == 200, r.text
            assert r.json() == {"person": "alice", "via": "token", "csrf": ""}

    assert store.token(token_id)["last_used_at"] is None  # type: ignore[index]
    run(go())
    first = store.token(token_id)["last_used_at"]  # type: ignore[index]
    assert first is not None
    updates: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("UPDATE tokens"):
            updates.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    run(go())  # within the minute: not written again, not even tried (no write transaction)
    event.remove(store.engine, "before_cursor_execute", seen)
    assert store.token(token_id)["last_used_at"] == first  # type: ignore[index]
    assert updates == []
    previous = clock.install(clock.OffsetClock(timedelta(seconds=61)))
    try:
        run(go())
    finally:
        clock.install(previous)
    assert store.token(token_id)["last_used_at"] > first  # type: ignore[index]


def test_revoked_token_is_401(store: Store) -> None:
    token_id, token = token_for(store, "alice", ("operator", "*", "*"))

    async def go() -> None:
        async with client(make_app(store)) as c, client(make_app(store)) as browser:
            assert (await login(browser, token)).status_code == 303
            assert (await browser.get("/deploys/shop/prod")).status_code == 200
            assert (await c.get("/deploys/shop/prod", headers=bearer(token))).status_code == 200
            store.revoke_token(token_id, by="admin")
            r = await c.get("/deploys/shop/prod", headers=bearer(token))
            assert r.status_code == 401 and "revoked" in r.json()["detail"]
            r = await browser.get("/deploys/shop/prod")  # the session ends with its token
            assert r.status_code == 401, r.text
            r = await login(browser, token)  # and it cannot log in again
            assert r.status_code == 401 and SESSION_COOKIE not in r.headers.get("set-cookie", "")

    run(go())


# --- what --------------------------------------------------------------------------------------
def test_wrong_permission_is_403(store: Store) -> None:
    _, viewer = token_for(store, "vera", ("viewer", "*", "*"))
    _, operator = token_for(store, "otto", ("operator", "*", "*"))
    _, approver = token_for(store, "anna", ("approver", "*", "*"))
    _, nobody = token_for(store, "nobody")

    async def go() -> None:
        async with client(make_app(store)) as c:
            for token in (viewer, operator, approver):  # operators and approvers may view
                assert (await c.get("/deploys/shop/prod", headers=bearer(token))).status_code == 200
            r = await c.get("/deploys/shop/prod", headers=bearer(nobody))
            assert r.status_code == 403 and "no grants" in r.json()["detail"]
            r = await c.post("/deploys/shop/prod/abort", headers=bearer(viewer))
            assert r.status_code == 403
            detail = r.json()["detail"]
            assert "vera may not act as operator" in detail and "viewer on */*" in detail
            assert "tminus access grant vera operator --plan shop --env prod" in detail
            assert (
                await c.post("/deploys/shop/prod/abort", headers=bearer(approver))
            ).status_code == 403
            assert (
                await c.post("/deploys/shop/prod/approve", headers=bearer(operator))
            ).status_code == 403
            r = await c.post("/deploys/shop/prod/abort", headers=bearer(operator))
            assert r.status_code == 200
            assert r.json() == {
                "by": "otto",
                "via": "token",
                "address": "192.0.2.7",
                "user_agent": "test-agent/1",
            }
            assert (
                await c.post("/deploys/shop/prod/approve", headers=bearer(approver))
            ).status_code == 200

    run(go())


def test_grants_are_scoped_by_plan_and_env(store: Store) -> None:
    _, token = token_for(store, "olga", ("operator", "shop", "prod"), ("viewer", "blog", "*"))

    async def go() -> None:
        async with client(make_app(store)) as c:
            h = bearer(token)
            assert (await c.post("/deploys/shop/prod/abort", headers=h)).status_code == 200
            assert (await c.post("/deploys/shop/staging/abort", headers=h)).status_code == 403
            assert (await c.post("/deploys/blog/prod/abort", headers=h)).status_code == 403
            assert (await c.get("/deploys/shop/prod", headers=h)).status_code == 200
            assert (await c.get("/deploys/shop/staging", headers=h)).status_code == 403
            assert (await c.get("/deploys/blog/anything", headers=h)).status_code == 200
            assert (await c.get("/deploys/wiki/prod", headers=h)).status_code == 403

    run(go())
    olga = Caller("olga", "token", None, None)
    assert auth.allowed(store, olga, "operator", "shop", "prod")
    assert not auth.allowed(store, olga, "operator", "*", "prod")  # '*' asks for all plans
    store.remove_grant("olga", "operator", plan="shop", environment="prod")
    assert not auth.allowed(store, olga, "operator", "shop", "prod")
    with pytest.raises(ValueError, match="unknown permission"):
        auth.allowed(store, olga, "admin", "shop", "prod")


# --- sessions and CSRF ------------------------------------------------------------------------
def test_login_checks_token_and_origin(store: Store) -> None:
    _, token = token_for(store, "alice", ("viewer", "*", "*"))

    async def go() -> None:
        async with client(make_app(store)) as c:
            form = await c.get("/login?next=/deploys/shop/prod")
            assert form.status_code == 200 and 'name="token"' in form.text
            assert 'value="/deploys/shop/prod"' in form.text
            assert form.headers["cache-control"] == "no-store"
            r = await c.post("/login", data={"token": "x" * 43}, headers=ORIGIN)
            assert r.status_code == 401 and "not valid" in r.text
            assert "set-cookie" not in r.headers
            r = await c.post(  # a login forced from another site
                "/login", data={"token": token}, headers={"Origin": "https://evil.example"}
            )
            assert r.status_code == 403 and "set-cookie" not in r.headers
            assert token not in r.text
            # an open redirect is not offered
            r = await c.post(
                "/login", data={"token": token, "next": "//evil.example/x"}, headers=ORIGIN
            )
            assert r.status_code == 303 and r.headers["location"] == "/"
            r = await login(c, token)
            assert r.status_code == 303 and r.headers["location"] == "/deploys/shop/prod"
            cookies = r.headers.get_list("set-cookie")
            session = next(h for h in cookies if h.startswith(f"{SESSION_COOKIE}="))
            csrf = next(h for h in cookies if h.startswith(f"{CSRF_COOKIE}="))
            assert "HttpOnly" in session and "SameSite=strict" in session
            assert "SameSite=strict" in csrf and "HttpOnly" not in csrf
            assert token not in session
            r = await c.get("/deploys/shop/prod")
            assert r.status_code == 200 and r.json()["via"] == "session"
            assert r.json()["csrf"] == c.cookies[CSRF_COOKIE]
            assert (await c.get("/page")).json() == {"person": "alice"}

    run(go())


def test_cookie_post_needs_the_csrf_token(store: Store) -> None:
    _, token = token_for(store, "otto", ("operator", "*", "*"))

    async def go() -> None:
        async with client(make_app(store)) as c:
            await login(c, token)
            csrf = (await c.get("/deploys/shop/prod")).json()["csrf"]
            assert csrf
            r = await c.post("/deploys/shop/prod/abort", headers=ORIGIN)
            assert r.status_code == 403 and "CSRF token missing" in r.json()["detail"]
            r = await c.post(
                "/deploys/shop/prod/abort", headers={**ORIGIN, "X-CSRF-Token": "x" * 43}
            )
            assert r.status_code == 403 and "does not match" in r.json()["detail"]
            r = await c.post("/deploys/shop/prod/abort", headers={**ORIGIN, "X-CSRF-Token": csrf})
            assert r.status_code == 200 and r.json()["via"] == "session"
            r = await c.post(  # the form field does as well as the header
                "/deploys/shop/prod/abort", data={"csrf_token": csrf}, headers=ORIGIN
            )
            assert r.status_code == 200, r.text
            # double submit: the token without its cookie is refused
            jar = c.cookies
            c.cookies = httpx.Cookies({SESSION_COOKIE: jar[SESSION_COOKIE]})
            r = await c.post("/deploys/shop/prod/abort", headers={**ORIGIN, "X-CSRF-Token": csrf})
            assert r.status_code == 403 and CSRF_COOKIE in r.json()["detail"]
            # logging out needs the token too, then clears the cookies
            c.cookies = jar
            assert (await c.post("/logout", headers=ORIGIN)).status_code == 403
            r = await c.post("/logout", headers={**ORIGIN, "X-CSRF-Token": csrf})
            assert r.status_code == 303 and r.headers["location"] == "/login"
            assert SESSION_COOKIE not in c.cookies
            assert (await c.get("/deploys/shop/prod")).status_code == 401

    run(go())


def test_origin_mismatch_is_refused(store: Store) -> None:
    _, token = token_for(store, "otto", ("operator", "*", "*"))

    async def go() -> None:
        async with client(make_app(store)) as c:
            await login(c, token)
            csrf = (await c.get("/deploys/shop/prod")).json()["csrf"]
            url = "/deploys/shop/prod/abort"
            for headers in (
                {"Origin": "https://evil.example"},
                {"Origin": "http://tminus.test.evil.example"},
                {"Origin": "null"},
                {"Referer": "https://evil.example/page"},
                {},  # neither Origin nor Referer
            ):
                r = await c.post(url, headers={**headers, "X-CSRF-Token": csrf})
                assert r.status_code == 403, headers
                assert "cross-site request refused" in r.json()["detail"], headers
            r = await c.post(
                url, headers={"Referer": f"{BASE}/deploys/shop/prod", "X-CSRF-Token": csrf}
            )
            assert r.status_code == 200
            r = await c.post(url, headers={"Origin": "http://tminus.test:80", "X-CSRF-Token": csrf})
            assert r.status_code == 200
            # a Bearer client is exempt: no browser adds that header by itself
            r = await c.post(url, headers={**bearer(token), "Origin": "https://evil.example"})
            assert r.status_code == 200 and r.json()["via"] == "token"

    run(go())


def test_session_expires(store: Store) -> None:
    _, token = token_for(store, "alice", ("viewer", "*", "*"))

    async def go(after: timedelta) -> int:
        async with client(make_app(store)) as c:
            await login(c, token)
            previous = clock.install(clock.OffsetClock(after))
            try:
                return (await c.get("/deploys/shop/prod")).status_code
            finally:
                clock.install(previous)

    assert run(go(auth.SESSION_TTL - timedelta(minutes=1))) == 200
    assert run(go(auth.SESSION_TTL + timedelta(seconds=1))) == 401


def test_forged_session_is_401(store: Store, tmp_path: Path) -> None:
    import base64
    import json

    _, token = token_for(store, "alice", ("viewer", "*", "*"))
    token_for(store, "mallory")
    other = Store(f"sqlite:///{tmp_path}/other.db")  # another store: another session key

    async def go() -> None:
        async with client(make_app(store)) as c, client(make_app(store)) as twin:
            await login(c, token)
            cookie = c.cookies[SESSION_COOKIE]
            # another server of the same store accepts it
            twin.cookies = httpx.Cookies({SESSION_COOKIE: cookie})
            assert (await twin.get("/deploys/shop/prod")).json()["person"] == "alice"
            version, payload, mac = cookie.split(".")
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            data["p"] = "mallory"
            forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
            for bad in (
                f"{version}.{forged}.{mac}",
                f"{version}.{payload}.{mac[:-2]}AA",
                "v1.x.y",
                "junk",
            ):
                twin.cookies = httpx.Cookies({SESSION_COOKIE: bad})
                assert (await twin.get("/deploys/shop/prod")).status_code == 401, bad
        async with client(make_app(other)) as stranger:
            stranger.cookies = httpx.Cookies({SESSION_COOKIE: cookie})
            assert (await stranger.get("/deploys/shop/prod")).status_code == 401

    run(go())
    other.close()


def test_trusted_header_only_when_enabled(store: Store) -> None:
    store.add_grant("hana", "operator", plan="*", environment="*", by="admin")
    who = {"X-Forwarded-User": "hana"}

    async def go() -> None:
        async with client(make_app(store)) as c:  # not enabled: the header names nobody
            assert (await c.get("/deploys/shop/prod", headers=who)).status_code == 401
        async with client(make_app(store, trusted_header="X-Forwarded-User")) as c:
            r = await c.get("/deploys/shop/prod", headers=who)
            assert r.status_code == 200 and r.json()["via"] == "header"
            csrf = r.json()["csrf"]
            assert csrf
            # a browser behind the proxy: unsafe requests are CSRF-checked too
            r = await c.post("/deploys/shop/prod/abort", headers={**who, **ORIGIN})
            assert r.status_code == 403
            r = await c.post(
                "/deploys/shop/prod/abort", headers={**who, **ORIGIN, "X-CSRF-Token": csrf}
            )
            assert r.status_code == 200 and r.json()["by"] == "hana"
            other = {"X-Forwarded-User": "mallory", **ORIGIN, "X-CSRF-Token": csrf}
            assert (await c.post("/deploys/shop/prod/abort", headers=other)).status_code == 403
            bad = {"X-Forwarded-User": "  "}
            assert (await c.get("/deploys/shop/prod", headers=bad)).status_code == 401
            assert (await c.get("/deploys/shop/prod")).status_code == 401
        with pytest.raises(ValueError):
            make_app(store, trusted_header="X-User: evil")

    run(go())


# --- logs ----------------------------------------------------------------------------------------
class _Uvicorn:
    """A real uvicorn serving the test app on a free port, in a thread of its own with its
    own store (the server's loop thread is the only one using its store, as in tminus serve)."""

    def __init__(self, url: str) -> None:
        import uvicorn

        self.port = free_port()
        self.url = url
        self.server: uvicorn.Server | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import uvicorn

        store = Store(self.url)
        config = uvicorn.Config(
            make_app(store),
            host="127.0.0.1",
            port=self.port,
            log_config=None,  # uvicorn's loggers propagate to the root: caplog sees them
            log_level="debug",
            access_log=True,
        )
        self.server = uvicorn.Server(config)
        try:
            self.server.run()
        finally:
            store.close()

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not (self.server is not None and self.server.started):
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.should_exit = True
        self.thread.join(10)


def _exercise(base: str, store: Store) -> list[str]:
    """Every way a token travels: bearer (good, wrong permission, revoked), login (good,
    bad), a session's requests; the response bodies, for the caller to search."""
    token_id, token = token_for(store, "alice", ("viewer", "*", "*"))
    bodies: list[str] = []
    origin = {"Origin": base}
    with httpx.Client(base_url=base, timeout=10) as c:
        for r in (
            c.get("/deploys/shop/prod", headers=bearer(token)),
            c.post("/deploys/shop/prod/abort", headers=bearer(token)),
            c.get("/deploys/shop/prod", headers=bearer(token + "x")),
            c.get("/login?next=/x", headers=bearer(token)),
            c.post("/login", data={"token": token[:-1] + "A"}, headers=origin),
            c.post("/login", data={"token": token}, headers={"Origin": "https://evil.example"}),
        ):
            bodies.append(r.text + str(r.headers))
        r = c.post("/login", data={"token": token, "next": "/deploys/shop/prod"}, headers=origin)
        assert r.status_code == 303, r.text
        bodies.append(r.text)
        r = c.get("/deploys/shop/prod")
        assert r.status_code == 200 and r.json()["via"] == "session"
        bodies.append(r.text)
        r = c.post("/deploys/shop/prod/abort", headers=origin)
        assert r.status_code == 403
        bodies.append(r.text)
        store.revoke_token(token_id, by="admin")
        for r in (c.get("/deploys/shop/prod"), c.get("/deploys/shop/prod", headers=bearer(token))):
            assert r.status_code == 401
            bodies.append(r.text + str(r.headers))
    return [token, *bodies]


def test_token_never_in_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"sqlite:///{tmp_path}/state.db"
    store = Store(url)
    with _Uvicorn(url) as base:
        token, *bodies = _exercise(base, store)
    store.close()
    out, err = capfd.readouterr()
    logged = caplog.text
    assert "POST /login" in logged and "401" in logged  # the access log was captured
    for where, text in (("logs", logged), ("stdout", out), ("stderr", err)):
        assert token not in text, where
        assert token[:20] not in text, where
    for body in bodies:
        assert token not in body
    assert hash_token(token) not in logged + "".join(bodies)


def test_auth_on_postgresql(pg_url: str) -> None:
    """The same rules over a PostgreSQL store (its own session key, made once)."""
    store = Store(pg_url)
    _, token = token_for(store, "pia", ("operator", "shop", "prod"))
    token_id2, token2 = token_for(store, "ron")

    second = Store(pg_url)

    async def go() -> None:
        async with client(make_app(store)) as c, client(make_app(second)) as twin:
            assert (await c.get("/deploys/shop/prod")).status_code == 401
            assert (
                await c.post("/deploys/shop/prod/abort", headers=bearer(token))
            ).status_code == 200
            assert (
                await c.post("/deploys/shop/dev/abort", headers=bearer(token))
            ).status_code == 403
            assert (await c.get("/deploys/shop/prod", headers=bearer(token2))).status_code == 403
            store.revoke_token(token_id2, by="admin")
            assert (await c.get("/deploys/shop/prod", headers=bearer(token2))).status_code == 401
            await login(c, token)
            csrf = (await c.get("/deploys/shop/prod")).json()["csrf"]
            twin.cookies = c.cookies  # a second server of the store takes the session
            r = await twin.post(
                "/deploys/shop/prod/abort", headers={**ORIGIN, "X-CSRF-Token": csrf}
            )
            assert r.status_code == 200 and r.json()["via"] == "session"
            assert (await twin.post("/deploys/shop/prod/abort", headers=ORIGIN)).status_code == 403

    run(go())
    assert store.token(1)["last_used_at"] is not None  # type: ignore[index]
    second.close()
    store.close()
