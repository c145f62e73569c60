"""The HTTP API of ``tminus serve`` (issue #17), against a real server process, a real store
and real workers: tokens and grants made with the CLI, requests with httpx.

Mutations tried (each makes a test here fail):
- ``_may`` in ``serve/api.py`` returning without ``require``: the viewer's abort is accepted
  (``test_who_may_do_what``);
- ``runner.approve`` without ``signer_problem``: alice's approval of her own deploy is
  accepted (``test_start_approve_and_stream``);
- the list not filtered by ``allowed``: the viewer of plan ``apia`` sees ``apib``'s deploy;
- ``request_abort_of_live`` not recording the request: the sleeping step runs its 60 s and
  the deploy never ends aborted (``test_abort_with_rollback_of_a_running_deploy``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve.conftest import Serve, write

PLAN = """
name: {name}
environment: prod
roles:
  operator: {{people: [alice]}}
  release_manager: {{people: [bob]}}
approvals:
  required: [release_manager]
  separation_of_duties: true
phases:
  - name: one
    steps:
      - kind: run
        command: "echo done >> effects.log"
"""

SLOW = """
name: apislow
environment: prod
phases:
  - name: one
    steps:
      - kind: run
        command: "echo did >> effects.log"
        undo: [{kind: run, command: "echo undone >> effects.log"}]
  - name: two
    steps:
      - kind: run
        command: "touch sleeping && sleep 60"
"""


def _token(s: Serve, person: str) -> str:
    out = s.tm("tokens", "create", "--person", person).stdout
    return out.strip().splitlines()[-1]


def _grant(s: Serve, person: str, permission: str, *args: str) -> None:
    s.tm("access", "grant", person, permission, *args)


def _client(port: int, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "api-test/1"} if token else {}
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=15)


def _start(c: httpx.Client, path: str) -> httpx.Response:
    """Register the plan at ``path`` (the server checks it) and start a deploy of it."""
    reg = c.post("/api/v1/plans", json={"path": path})
    if reg.status_code != 201:
        return reg
    name, env = reg.json()["name"], reg.json()["environment"]
    return c.post(f"/api/v1/plans/{name}/{env}/deploys", json={})


def _state(c: httpx.Client, deploy: str) -> str:
    return str(c.get(f"/api/v1/deploys/{deploy}").json()["state"])


class _Stream(threading.Thread):
    """Reads a deploy's SSE stream in the background."""

    def __init__(self, port: int, token: str, deploy: str) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/api/v1/deploys/{deploy}/stream"
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.stop = False
        self.error: Exception | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with httpx.stream("GET", self.url, headers=headers, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(json.loads(line[6:]))
                    if self.stop:
                        return
        except httpx.HTTPError as exc:  # the server stopped: end of the stream
            self.error = exc


def test_start_approve_and_stream(serve_env: Serve) -> None:
    """Start through the API, the plan's approval rule on the server side (separation of
    duties refuses alice's own approval, 409), bob's approval continues the deploy, the SSE
    stream carries every event, each action is audited with address and user agent, and no
    token is in the server's log or the event log."""
    s = serve_env
    write(s.cwd / "p.yaml", PLAN.format(name="apia"))
    alice, bob = _token(s, "alice"), _token(s, "bob")
    _grant(s, "alice", "operator")
    _grant(s, "alice", "approver")
    _grant(s, "bob", "approver")
    _, port = s.start()
    with _client(port, alice) as a, _client(port, bob) as b:
        r = _start(a, str(s.cwd / "p.yaml"))
        assert r.status_code == 201, r.text
        deploy = r.json()["deploy"]
        s.wait_for("awaiting approval", lambda: _state(a, deploy) == "awaiting_approval")
        stream = _Stream(port, alice, deploy)
        stream.start()
        r = a.post(f"/api/v1/deploys/{deploy}/approve", json={"role": "release_manager"})
        assert r.status_code == 409 and "not in role" in r.json()["detail"], r.text
        r = a.post(f"/api/v1/deploys/{deploy}/approve", json={"role": "operator"})
        assert r.status_code == 409 and "separation of duties" in r.json()["detail"], r.text
        r = b.post(f"/api/v1/deploys/{deploy}/approve", json={"role": "release_manager"})
        assert r.status_code == 200, r.text
        assert "tminus serve" in r.json()["message"]
        s.wait_for("the deploy to succeed", lambda: _state(a, deploy) == "succeeded")
        s.wait_for(
            "the stream to carry the end",
            lambda: any(e["type"] == "deploy.succeeded" for e in stream.events),
            timeout=10,
        )
        stream.stop = True
        types = [e["type"] for e in stream.events]
        assert "approval.given" in types and types.index("approval.given") < types.index(
            "deploy.succeeded"
        )
        seqs = [e["seq"] for e in stream.events]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
        # paged events: the same events, in pages of 3
        got, after = [], 0
        while True:
            page = a.get(f"/api/v1/deploys/{deploy}/events", params={"after": after, "limit": 3})
            rows = page.json()["events"]
            if not rows:
                break
            assert len(rows) <= 3
            got += rows
            after = page.json()["next"]
        assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
        assert {e["seq"] for e in stream.events} <= {e["seq"] for e in got}
    assert (s.cwd / "effects.log").read_text() == "done\n"
    events = s.events(deploy)
    given = [e for e in events if e["type"] == "approval.given"]
    assert len(given) == 1 and given[0]["data"]["by"] == "bob"
    assert given[0]["data"]["address"] == "127.0.0.1"
    assert given[0]["data"]["user_agent"] == "api-test/1"
    # an approval's audit record is its own event (one transaction); the others' api.action
    assert given[0]["data"]["action"] == "approve" and given[0]["data"]["via"]
    actions = [e["data"]["action"] for e in events if e["type"] == "api.action"]
    assert actions == ["start"], actions
    everything = (
        s.log()
        + json.dumps(events)
        + (s.cwd / ".tminus").joinpath("serve", "logs", f"{deploy}.log").read_text()
    )
    assert alice not in everything and bob not in everything


def test_who_may_do_what(serve_env: Serve) -> None:
    """401 without a token or with a wrong one; a viewer of plan apia sees only apia's
    deploys and gets 403 for an action; an unknown deploy is a 404."""
    s = serve_env
    write(s.cwd / "a.yaml", PLAN.format(name="apia"))
    write(s.cwd / "b.yaml", PLAN.format(name="apib"))
    admin, carol = _token(s, "admin"), _token(s, "carol")
    _grant(s, "admin", "operator")
    _grant(s, "carol", "viewer", "--plan", "apia")
    _, port = s.start()
    with _client(port, None) as anon, _client(port, "x" * 43) as wrong:
        assert anon.get("/api/v1/deploys").status_code == 401
        assert wrong.get("/api/v1/deploys").status_code == 401
        assert anon.get("/healthz").status_code == 200
    with _client(port, admin) as a, _client(port, carol) as c:
        ra = _start(a, str(s.cwd / "a.yaml"))
        rb = _start(a, str(s.cwd / "b.yaml"))
        assert ra.status_code == rb.status_code == 201, ra.text + rb.text
        da, db = ra.json()["deploy"], rb.json()["deploy"]
        ids = [d["id"] for d in c.get("/api/v1/deploys").json()["deploys"]]
        assert ids == [da]
        assert c.get(f"/api/v1/deploys/{db}").status_code == 403
        assert c.get(f"/api/v1/deploys/{da}").status_code == 200
        r = c.post(f"/api/v1/deploys/{da}/abort", json={"rollback": True})
        assert r.status_code == 403 and "carol may not act as operator" in r.json()["detail"]
        assert c.get("/api/v1/deploys/nope-1").status_code == 404
        r = c.post("/api/v1/plans/apia/prod/deploys", json={})
        assert r.status_code == 403
        r = c.post("/api/v1/plans", json={"path": str(s.cwd / "a.yaml")})
        assert r.status_code == 403  # registering needs operator too
        assert [p["name"] for p in c.get("/api/v1/plans").json()["plans"]] == ["apia"]


@pytest.mark.timeout(120)
def test_abort_with_rollback_of_a_running_deploy(serve_env: Serve) -> None:
    """The abort button's request: the live runner (a worker of the server) stops its
    sleeping step and rolls back phase one's undo; recorded as the person's abort."""
    s = serve_env
    write(s.cwd / "slow.yaml", SLOW)
    alice = _token(s, "alice")
    _grant(s, "alice", "operator")
    _, port = s.start()
    with _client(port, alice) as a:
        deploy = _start(a, str(s.cwd / "slow.yaml")).json()["deploy"]
        s.wait_for("the sleep to start", lambda: (s.cwd / "sleeping").exists())
        t0 = time.monotonic()
        r = a.post(f"/api/v1/deploys/{deploy}/abort", json={"rollback": True})
        assert r.status_code == 200, r.text
        assert "abort requested" in r.json()["message"]
        s.wait_for(
            "the deploy to be rolled back",
            lambda: _state(a, deploy) in ("aborted", "rolled_back"),
            timeout=40,
        )
        assert time.monotonic() - t0 < 40  # not the sleep's 60 s
    assert (s.cwd / "effects.log").read_text() == "did\nundone\n"
    requested = [e for e in s.events(deploy) if e["type"] == "deploy.abort_requested"]
    assert requested and requested[0]["data"]["by"] == "alice"
    assert requested[0]["data"]["rollback"] is True


def test_openapi_document_lists_the_api(serve_env: Serve) -> None:
    s = serve_env
    token = _token(s, "reader")
    _, port = s.start()
    with _client(port, None) as anon:
        assert anon.get("/openapi.json").status_code == 401
        assert anon.get("/docs").status_code == 404  # no page that loads a CDN's scripts
    with _client(port, token) as c:
        doc = c.get("/openapi.json").json()
    paths = set(doc["paths"])
    for p in (
        "/api/v1/deploys",
        "/api/v1/deploys/{deploy_id}",
        "/api/v1/deploys/{deploy_id}/events",
        "/api/v1/deploys/{deploy_id}/stream",
        "/api/v1/deploys/{deploy_id}/approve",
        "/api/v1/deploys/{deploy_id}/abort",
        "/api/v1/deploys/{deploy_id}/rollback",
        "/api/v1/plans",
        "/api/v1/plans/{plan}/{environment}/deploys",
    ):
        assert p in paths, p
    assert "/login" not in paths and "/" not in paths


def test_trusted_header_only_when_the_server_is_told(serve_env: Serve) -> None:
    """``--trusted-header X-Forwarded-User`` (an oauth2-proxy in front): the header names the
    person, whose grants apply; a server not told so ignores the header (401). Mutation:
    ``configure`` given the header whatever the option: the second server answers 200."""
    s = serve_env
    _grant(s, "dave", "viewer")
    _, port = s.start("proxied", "--trusted-header", "X-Forwarded-User")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as c:
        r = c.get("/api/v1/deploys", headers={"X-Forwarded-User": "dave"})
        assert r.status_code == 200, r.text
        r = c.get("/api/v1/deploys", headers={"X-Forwarded-User": "erin"})
        assert r.status_code == 200 and r.json()["deploys"] == []  # no grant: sees nothing
    _, port2 = s.start("plain")
    with httpx.Client(base_url=f"http://127.0.0.1:{port2}", timeout=15) as c:
        r = c.get("/api/v1/deploys", headers={"X-Forwarded-User": "dave"})
        assert r.status_code == 401


def test_plans_are_checked_when_registered_and_uploaded(serve_env: Serve) -> None:
    """A plan with errors is not registered: its problems (file:line:column) are the 400; an
    uploaded plan is kept as a private file under the state directory and can be started;
    an unknown plan is a 404; a registered file that changed into errors is a 400 at start.
    Mutation: ``_passed`` in serve/plans.py not refusing a plan with errors: no 400 with the
    problems (the broken plan reaches the registration, a 500); the NUL guard of
    ``check_path`` removed: a path with a NUL character is a 500."""
    s = serve_env
    admin = _token(s, "admin")
    _grant(s, "admin", "operator")
    write(s.cwd / "bad.yaml", "name: bad\nenvironment: prod\nphases:\n  - name: x\n    steps: 3\n")
    _, port = s.start()
    with _client(port, admin) as a:
        r = a.post("/api/v1/plans", json={"path": str(s.cwd / "bad.yaml")})
        assert r.status_code == 400 and "bad.yaml:5:" in r.json()["detail"], r.text
        assert a.get("/api/v1/plans").json()["plans"] == []
        # a path no file can have (schemathesis found it a 500: Path.resolve's ValueError)
        r = a.post("/api/v1/plans", json={"path": "plan\u0000.yaml"})
        assert r.status_code == 400 and "NUL" in r.json()["detail"], r.text
        r = a.post(
            "/api/v1/plans/upload", json={"filename": "up.yaml", "text": PLAN.format(name="upl")}
        )
        assert r.status_code == 201, r.text
        path = Path(r.json()["path"])
        assert path.is_file() and (path.stat().st_mode & 0o077) == 0
        assert path.read_text() == PLAN.format(name="upl")
        r = a.post("/api/v1/plans/upl/prod/deploys", json={})
        assert r.status_code == 201, r.text
        s.wait_for(
            "awaiting approval", lambda: _state(a, r.json()["deploy"]) == "awaiting_approval"
        )
        assert a.post("/api/v1/plans/nope/prod/deploys", json={}).status_code == 404
        write(s.cwd / "p.yaml", PLAN.format(name="chg"))
        assert a.post("/api/v1/plans", json={"path": str(s.cwd / "p.yaml")}).status_code == 201
        write(s.cwd / "p.yaml", "name: chg\nenvironment: prod\nphases: 7\n")
        r = a.post("/api/v1/plans/chg/prod/deploys", json={})
        assert r.status_code == 400, r.text
    listed = s.tm("plans", "list", "--output", "json")
    assert sorted(p["name"] for p in json.loads(listed.stdout)) == ["chg", "upl"]


def test_notifications_link_to_the_deploy_page(serve_env: Serve) -> None:
    """``tminus serve --url``: a message recorded by the deploy's runner links to its page on
    the dashboard. Mutation: ``notify.deploy_link`` returning None: no link."""
    s = serve_env
    write(
        s.cwd / "n.yaml",
        """
name: linked
environment: prod
notifications:
  channels:
    console: {kind: log}
  rules:
    - when: success
      channels: [console]
phases:
  - name: one
    steps:
      - kind: run
        command: "true"
""",
    )
    admin = _token(s, "admin")
    _grant(s, "admin", "operator")
    _, port = s.start("linked", "--url", "https://deploy.example.com/")
    with _client(port, admin) as a:
        deploy = _start(a, str(s.cwd / "n.yaml")).json()["deploy"]
        s.wait_for("the deploy to succeed", lambda: _state(a, deploy) == "succeeded")
        rows = a.get(f"/api/v1/deploys/{deploy}/notifications").json()["notifications"]
    assert [r["when"] for r in rows] == ["success"]
    from tminus.store import Store

    store = Store(f"sqlite:///{s.cwd / '.tminus' / 'state.db'}")
    try:
        (row,) = store.outbox(deploy)
        assert row["message"]["link"] == f"https://deploy.example.com/deploys/{deploy}"
    finally:
        store.close()


def test_pause_lets_the_step_finish_then_pauses_and_resume_goes_on(serve_env: Serve) -> None:
    """The API's pause: the step in flight finishes, the deploy is *paused* before the next
    one (its effect not there), and resume goes on from there. Mutation: the engine not
    reading ``pause_requested`` (``_forward`` without the check): the deploy runs to the end
    and the state is never paused."""
    s = serve_env
    write(
        s.cwd / "p.yaml",
        """
name: pausable
environment: prod
phases:
  - name: one
    steps:
      - kind: run
        command: "touch first && while [ ! -e go ]; do sleep 0.05; done"
      - kind: run
        command: "touch second"
""",
    )
    alice = _token(s, "alice")
    _grant(s, "alice", "operator")
    _, port = s.start()
    with _client(port, alice) as a:
        deploy = _start(a, str(s.cwd / "p.yaml")).json()["deploy"]
        s.wait_for("the first step", lambda: (s.cwd / "first").exists())
        r = a.post(f"/api/v1/deploys/{deploy}/pause")
        assert r.status_code == 200, r.text
        (s.cwd / "go").touch()  # the step in flight finishes
        s.wait_for("the pause", lambda: _state(a, deploy) == "paused")
        assert not (s.cwd / "second").exists()
        assert "paused by alice" in a.get(f"/api/v1/deploys/{deploy}").json()["reason"]
        r = a.post(f"/api/v1/deploys/{deploy}/pause")
        assert r.status_code == 409  # nothing runs now
        r = a.post(f"/api/v1/deploys/{deploy}/resume", json={"action": "continue"})
        assert r.status_code in (200, 202), r.text
        s.wait_for("the end", lambda: _state(a, deploy) == "succeeded")
    assert (s.cwd / "second").exists()
