"""The secret-grep over every page and API response of a deploy that uses secrets (issue
#17): a secret's value reaches a command, a check, a notification and a failure message of a
real deploy (run by the real CLI, then rolled back); every API response, every dashboard page
and the status page of that deploy are read through the server's own app (in-process ASGI:
the real store, the real auth) and searched for the value: 0 occurrences. A token is used for
the reads; it appears in no response either.

Mutation tried: ``Resolver.mask`` returning its text unchanged (what every event, step error
and message passes): the grep finds the secret in the events, the deploy page and the
report.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.conftest import Tm
from tminus.security import hash_token, new_token

SECRET = "s3cr3t-Value-9f8e7d"

PLAN = """
name: secretive
environment: prod
secrets:
  api_key: ${env:SECRETIVE_KEY}
notifications:
  channels:
    console: {kind: log, audience: public}
  rules:
    - when: failure
      channels: [console]
      message: "failed with key ${api_key}: {{ reason }}"
    - when: phase_start
      channels: [console]
      message: "starting with ${api_key}"
      audience: public
phases:
  - name: one
    steps:
      - kind: run
        command: "echo using ${api_key} >> effects.log"
        undo: [{kind: run, command: "echo undo ${api_key} >> effects.log"}]
      - kind: run
        command: "echo the key is ${api_key} >&2; exit 3"
    verify:
      - source: command
        name: key check
        command: "echo ${api_key}"
        expect: contains "zzz"
"""


def _app(tmp: Path) -> tuple[object, str, str]:
    from tminus.serve.http import ServeMetrics, make_app
    from tminus.serve.server import Server

    (tmp / "p.yaml").write_text(PLAN)
    url = f"sqlite:///{tmp / '.tminus' / 'state.db'}"  # the CLI's default store there
    tm = Tm(tmp, {"SECRETIVE_KEY": SECRET})
    tm("run", "p.yaml", check=1)  # the second step fails: rolled back
    assert SECRET in (tmp / "effects.log").read_text()  # the secret did reach the commands
    server = Server(url, bind=None)
    server.metrics = ServeMetrics(server)
    token = new_token()
    server.store.add_token("reader", hash_token(token), label=None, by="test")
    server.store.add_grant("reader", "operator", plan="*", environment="*", by="test")
    server.store.add_grant("reader", "approver", plan="*", environment="*", by="test")
    deploy = str(server.store.latest_deploy()["id"])  # type: ignore[index]
    return make_app(server), token, deploy


def test_no_secret_in_any_response(tmp_path: Path) -> None:
    app, token, deploy = _app(tmp_path)
    base = f"/api/v1/deploys/{deploy}"
    paths = [
        "/api/v1/deploys",
        base,
        f"{base}/events?limit=500",
        f"{base}/measurements",
        f"{base}/watch",
        f"{base}/artifacts",
        f"{base}/notifications",
        f"{base}/report?format=html",
        f"{base}/report?format=md",
        f"{base}/report?format=json",
        f"{base}/runbook?format=html",
        f"{base}/runbook?format=md",
        "/",
        f"/deploys/{deploy}",
        f"/deploys/{deploy}/panel",
        "/status",
        "/status.json",
        "/status.atom",
        "/metrics",
        "/openapi.json",
    ]

    async def read_all() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as c:
            return {p: await c.get(p) for p in paths}

    answers = asyncio.run(read_all())
    for path, r in answers.items():
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    found = [p for p, r in answers.items() if SECRET in r.text]
    assert found == [], found
    leaked = [p for p, r in answers.items() if token in r.text]
    assert leaked == [], leaked
    # the reads saw the deploy: its failure and the masked value are there
    assert "***" in answers[f"{base}/events?limit=500"].text
    assert "exit" in answers[f"/deploys/{deploy}"].text.lower()
