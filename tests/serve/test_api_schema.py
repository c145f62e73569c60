"""schemathesis against the API's own OpenAPI document (issue #17): generated requests to
every operation, with a valid token, on a store that holds real deploys; no answer is a 5xx
and every answer matches the schema its operation documents (status code, content type,
body).

The app is the server's own (``make_app``), called in-process over ASGI: no network, the
real store (SQLite, filled by real ``tminus run``s), the real auth layer. Requests that
would start worker processes (resume, rollback, a start) name deploys and plans that do not
exist, as generated ids do; the one real deploy has ended, so actions on it are refused by the
engine (409), which is documented.

Mutation tried: ``_deploy_row`` without its ``NotFound`` → 404 mapping: generated ids give
500s and this fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.conftest import Tm
from tminus.security import hash_token, new_token

PLAN = """
name: schema
environment: test
phases:
  - name: one
    steps:
      - kind: run
        command: "echo done"
"""

_STATE: dict[str, Any] = {}
#: What the issue asks: no 5xx, and every answer as its operation documents it (a request
#: valid by the schema may still be refused: a plan path that does not exist is a 400).
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def _app(tmp: Path) -> Any:
    from tminus.serve.http import ServeMetrics, make_app
    from tminus.serve.server import Server

    (tmp / "p.yaml").write_text(PLAN)
    url = f"sqlite:///{tmp / '.tminus' / 'state.db'}"  # the CLI's default store there
    tm = Tm(tmp)
    tm("run", "p.yaml", check=0)
    server = Server(url, bind=None)
    server.metrics = ServeMetrics(server)
    token = new_token()
    server.store.add_token("robot", hash_token(token), label=None, by="test")
    for perm in ("viewer", "operator", "approver"):
        server.store.add_grant("robot", perm, plan="*", environment="*", by="test")
    _STATE.update(token=token, server=server)
    return make_app(server)


def test_api_conforms_to_its_schema(tmp_path: Path) -> None:
    app = _app(tmp_path)
    auth = {"Authorization": f"Bearer {_STATE['token']}"}
    try:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=auth)
        operations = [r.ok() for r in schema.get_all_operations()]
        # the event stream never ends by itself: its answers are checked in test_api
        tested = [op for op in operations if not op.path.endswith("/stream")]
        assert len(tested) >= 15, [op.path for op in operations]
        failures: list[str] = []
        for op in tested:

            @given(case=op.as_strategy())
            @settings(
                max_examples=15,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                case.call_and_validate(headers=auth, checks=CHECKS)

            try:
                check()
            except Exception as exc:  # collect every operation's failure, not just the first
                failures.append(f"{op.method.upper()} {op.path}: {exc}")
        assert not failures, "\n\n".join(failures)
    finally:
        _STATE["server"].store.close()
