"""A local stand-in for Atlassian's Statuspage REST API (not Atlassian's API itself): a real
HTTP server on 127.0.0.1 that implements the subset the ``statuspage`` notifier uses, under
``/v1/pages/<page_id>``:

- ``GET /`` the page; ``POST /incidents`` creates an incident (201, the incident as JSON with
  a new ``id``); ``PATCH /incidents/<id>`` updates one (200; 404 for an unknown id);
- ``Authorization: OAuth <token>`` is required (401 otherwise), as the real API requires it;
- every call is recorded (method, path, headers, JSON body) in :attr:`StatuspageFake.calls`;
- ``strict``: a scheduled maintenance refuses an incident's status and an incident a
  maintenance's one with 422, as Atlassian's documentation separates the two sets (whether
  the real API refuses them is not verified here);
- ``fail``: a queue of statuses answered (with a JSON error) before anything else is done.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PAGE_ID = "pg7k2abc9xyz"
MAINTENANCE = frozenset({"scheduled", "in_progress", "verifying", "completed"})
REALTIME = frozenset({"investigating", "identified", "monitoring", "resolved"})


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass
class StatuspageFake:
    token: str
    url: str = ""  # the page's API base: http://127.0.0.1:PORT/v1/pages/<PAGE_ID>
    calls: list[Call] = field(default_factory=list)
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    strict: bool = False
    fail: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Any:
        body = json.loads(raw) if raw else None
        self.calls.append(Call(method, path, headers, body))
        if self.fail:
            status = self.fail.pop(0)
            return status, {"error": f"forced {status}"}
        if headers.get("Authorization") != f"OAuth {self.token}":
            return 401, {"error": "Could not authenticate"}
        prefix = f"/v1/pages/{PAGE_ID}"
        if not path.startswith(prefix):
            return 404, {"error": "page not found"}
        rest = path[len(prefix) :]
        if method == "GET" and rest in ("", "/"):
            return 200, {"id": PAGE_ID, "name": "Media status"}
        fields = (body or {}).get("incident")
        if not isinstance(fields, dict):
            return 422, {"error": "incident is missing"}
        with self.lock:
            if method == "POST" and rest == "/incidents":
                return self.create(fields)
            if method == "PATCH" and rest.startswith("/incidents/"):
                return self.update(rest.removeprefix("/incidents/"), fields)
        return 404, {"error": "not found"}

    def create(self, fields: dict[str, Any]) -> Any:
        if not fields.get("name"):
            return 422, {"error": "name can't be blank"}
        scheduled = "scheduled_for" in fields
        status = fields.get("status") or ("scheduled" if scheduled else "investigating")
        if status not in (MAINTENANCE if scheduled else REALTIME):
            return 422, {"error": f"status {status} is not valid here"}
        incident = dict(fields) | {
            "id": f"inc{len(self.incidents) + 1:04d}",
            "status": status,
            "updates": [{"status": status, "body": fields.get("body", "")}],
        }
        self.incidents[incident["id"]] = incident
        return 201, incident

    def update(self, incident_id: str, fields: dict[str, Any]) -> Any:
        incident = self.incidents.get(incident_id)
        if incident is None:
            return 404, {"error": "The requested resource could not be found."}
        status = fields.get("status", incident["status"])
        allowed = MAINTENANCE if "scheduled_for" in incident else REALTIME
        if self.strict and status not in allowed:
            return 422, {"error": f"status {status} is not valid for this incident"}
        incident["status"] = status
        incident["updates"].append({"status": status, "body": fields.get("body", "")})
        return 200, incident


@contextmanager
def serve(token: str) -> Iterator[StatuspageFake]:
    """The fake, listening on a free port of 127.0.0.1, accepting ``token``."""
    fake = StatuspageFake(token=token)

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            status, doc = fake.handle(self.command, self.path, dict(self.headers.items()), raw)
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _any

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1/pages/{PAGE_ID}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
