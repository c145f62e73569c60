"""``tminus serve`` outlives clients that leave before their answer (issue #17's bench found
it: a health probe whose timeout expired while the server was busy killed it with SIGPIPE,
whose default action the CLI restores for ``tminus log | head``).

Mutation tried: ``signal.signal(signal.SIGPIPE, signal.SIG_IGN)`` removed from
``start_http`` in ``serve/http.py``: the server dies (exit -13) and the test fails.
"""

from __future__ import annotations

import socket
import time

from tests.serve.conftest import Serve


def test_a_client_gone_before_its_answer_does_not_kill_the_server(serve_env: Serve) -> None:
    """Requests whose client closes its socket at once, before the server answers (slow
    answers: the OpenAPI document built on first use, the list page): the server goes on
    and answers the next request."""
    s = serve_env
    token = s.tm("tokens", "create", "--person", "alice").stdout.strip().splitlines()[-1]
    s.tm("access", "grant", "alice", "viewer")
    proc, port = s.start()
    for path in ["/openapi.json", "/", "/api/v1/deploys", "/openapi.json"] * 5:
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\n\r\n".encode()
            )
        time.sleep(0.05)
        assert proc.poll() is None, f"the server died ({proc.returncode}) after {path}"
    time.sleep(0.5)
    assert proc.poll() is None, f"the server died ({proc.returncode})"
    status, body = s.get(port, "/healthz")
    assert status == 200 and '"ok"' in body
