"""The public status page of ``tminus serve`` (issue #16, item 4), on real deploys.

The store is filled by the real CLI (``tminus schedule`` and ``tminus run`` of tiny plans whose
notification rules go to ``log`` channels, one of them ``audience: public``), and the page is
served by a real uvicorn on a loopback port, read over HTTP and in a headless Chromium with
JavaScript disabled. Nothing is stood in for.

Mutations tried (each makes the named test fail; restored after):

- ``_public_update`` without its ``row["channel"] not in rule.public_on`` guard → the
  internal messages appear (``test_json_...``, ``test_a_secret...`` and the browser's fail);
- ``PlanFacts.of`` taking a rule with no audience on a channel with no audience for public
  → the plan with no public rule appears (the same three fail);
- ``PlanFacts.of`` ignoring a rule's own audience (``audience: internal`` on the public
  channel) → that rule's message appears (the same three fail);
- ``_public_update`` showing the recorded text of a rule without ``message:`` (no
  ``own_text`` check) → the engine's default text, with the deploy's id and the failed step,
  appears (``test_json_...`` fails);
- the Atom feed without its ``updated`` elements → ``test_the_atom_feed...`` fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from tests.conftest import Tm
from tminus.store.status import StatusMixin
from tminus.store.store import Store

SECRET = "pa55-Wd-9f3c1e"
ATOM = "{http://www.w3.org/2005/Atom}"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "status-page.png"

_CHANNELS = """\
secrets:
  api_key: ${env:STATUS_API_KEY}
notifications:
  channels:
    status:
      kind: log
      audience: public
    team:
      kind: log
"""

WEBSITE = f"""\
tminus: 1
name: website
environment: prod
window:
  start: 2030-01-10T02:00:00
  timezone: Europe/Berlin
  duration: 2h
{_CHANNELS}  rules:
    - when: before_window
      before: 24h
      channels: [status]
      message: "The website is read-only for two hours."
    - when: phase_start
      channels: [team]
      message: "internal: web1 drains, key ${{api_key}}"
phases:
  - name: release
    steps:
      - kind: run
        name: swap the web root
        command: "true"
"""

API = f"""\
tminus: 1
name: api
environment: prod
{_CHANNELS}  rules:
    - when: phase_start
      channels: [team]
      message: "internal: migrating db-primary-7 with ${{api_key}}"
    - when: phase_start
      channels: [status, team]
      audience: public
      message: "We are upgrading the API; requests may be slower. ref ${{api_key}}"
    - when: success
      channels: [status]
phases:
  - name: upgrade
    steps:
      - kind: run
        name: run the api migration
        command: "echo migrating"
"""

BILLING = f"""\
tminus: 1
name: billing
environment: prod
{_CHANNELS}  rules:
    - when: phase_start
      channels: [status]
      audience: internal
      message: "internal: billing schema change begins"
    - when: failure
      channels: [team]
      message: "internal: the billing step broke"
    - when: rollback
      channels: [status]
phases:
  - name: schema
    on_failure: rollback
    steps:
      - kind: run
        name: apply the billing schema
        command: "exit 3"
"""

INTERNAL = f"""\
tminus: 1
name: internal-tool
environment: prod
{_CHANNELS}  rules:
    - when: success
      channels: [team]
      message: "internal-tool shipped"
phases:
  - name: ship
    steps:
      - kind: run
        name: ship the tool
        command: "true"
"""

SEARCH = f"""\
tminus: 1
name: search
environment: staging
{_CHANNELS}  rules:
    - when: success
      channels: [status]
      message: "Search reindex finished."
phases:
  - name: reindex
    steps:
      - kind: run
        name: reindex
        command: "true"
"""


class _StatusStore(Store, StatusMixin):
    """The store with the status page's reads (a no-op once ``Store`` has them)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Page:
    """The status router on a real uvicorn in a thread, over the deploys' store."""

    def __init__(self, state_url: str) -> None:
        import uvicorn
        from fastapi import FastAPI

        from tminus.serve.status_page import router

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            # Opened on the server's loop thread, the only one that uses it (as in serve).
            app.state.server = SimpleNamespace(store=_StatusStore(state_url))
            yield
            app.state.server.store.close()

        app = FastAPI(lifespan=lifespan)
        app.include_router(router)

        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert self.thread.is_alive(), "uvicorn stopped at start"
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        req = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def json(self, path: str) -> Any:
        status, _headers, body = self.get(path)
        assert status == 200, (status, body)
        return json.loads(body)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def deploys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Five deploys made by the CLI: one scheduled, three ended (succeeded, rolled back, one
    with no public rule) in prod, one succeeded in staging."""
    cwd = tmp_path_factory.mktemp("status")
    tm = Tm(cwd, {"STATUS_API_KEY": SECRET})
    for name, text in [
        ("website", WEBSITE),
        ("api", API),
        ("billing", BILLING),
        ("internal", INTERNAL),
        ("search", SEARCH),
    ]:
        (cwd / f"{name}.yaml").write_text(text)
    tm("schedule", "website.yaml", check=0)
    tm("run", "api.yaml", check=0)
    tm("run", "billing.yaml", check=1)
    tm("run", "internal.yaml", check=0)
    tm("run", "search.yaml", check=0)
    states = {r["id"]: r["state"] for r in tm.json("list")}
    assert states == {
        "website-1": "scheduled",
        "api-1": "succeeded",
        "billing-1": "rolled_back",
        "internal-tool-1": "succeeded",
        "search-1": "succeeded",
    }
    return {"cwd": cwd, "state": f"sqlite:///{cwd}/.tminus/state.db", "tm": tm}


@pytest.fixture(scope="module")
def page(deploys: dict[str, Any]) -> Iterator[Page]:
    p = Page(deploys["state"])
    yield p
    p.close()


def _by_plan(body: dict[str, Any], env: str) -> dict[str, dict[str, Any]]:
    (e,) = [e for e in body["environments"] if e["environment"] == env]
    return {m["plan"]: m for m in e["maintenances"]}


#: What the deploys recorded that is not public: internal rule texts, step names, commands,
#: the deploy ids (in the engine's default texts), the operator, the secret.
NEVER = [
    SECRET,
    "internal",
    "web1",
    "db-primary-7",
    "swap the web root",
    "run the api migration",
    "apply the billing schema",
    "exit 3",
    "echo migrating",
    "billing-1",
    "api-1",
    "website-1",
    "alice",
    "rolling back:",
]


def test_json_shows_the_lifecycle_and_only_what_is_public(page: Page) -> None:
    """Scheduled (with its window in its time zone), completed (its public updates, newest
    first, the rule without a message in generic words), rolled back (an incident note); a plan
    with no public rule is absent, and nothing internal is in the answer."""
    body = page.json("/status.json")
    assert body["schema"] == "tminus.status/1"
    assert [e["environment"] for e in body["environments"]] == ["prod", "staging"]
    prod = _by_plan(body, "prod")
    assert set(prod) == {"website", "api", "billing"}  # internal-tool has no public rule

    web = prod["website"]
    assert (web["status"], web["status_text"]) == ("scheduled", "Scheduled maintenance")
    assert web["window"] == {
        "start": "2030-01-10T02:00:00+01:00",
        "end": "2030-01-10T04:00:00+01:00",
        "timezone": "Europe/Berlin",
        "text": "2030-01-10 02:00–04:00 Europe/Berlin",
    }
    assert web["note"] == "Maintenance is scheduled."
    assert web["updates"] == []  # its notice is due at T-24h, in 2030
    assert web["ended_at"] is None

    api = prod["api"]
    assert (api["status"], api["status_text"]) == ("completed", "Completed")
    assert api["window"] is None and api["ended_at"] is not None
    assert [(u["kind"], u["text"]) for u in api["updates"]] == [
        ("resolved", "The maintenance is complete."),  # no message: generic words
        ("update", "We are upgrading the API; requests may be slower. ref ***"),
    ]

    billing = prod["billing"]
    assert (billing["status"], billing["status_text"]) == ("rolled_back", "Rolled back — incident")
    assert billing["note"] == (
        "The maintenance did not complete as planned; its changes were rolled back."
    )
    assert [(u["kind"], u["text"]) for u in billing["updates"]] == [
        ("incident", "The maintenance ran into a problem; its changes are rolled back.")
    ]
    summary = next(e for e in body["environments"] if e["environment"] == "prod")
    assert (summary["summary"], summary["summary_text"]) == ("scheduled", "Maintenance scheduled")

    text = json.dumps(body, ensure_ascii=False)
    for word in NEVER:
        assert word not in text, word


def test_one_environment_per_url(page: Page) -> None:
    """``/status/ENV`` (+ ``.json``, ``.atom``) shows that environment only; one with nothing
    public answers 200 with nothing in it."""
    staging = page.json("/status/staging.json")
    assert [e["environment"] for e in staging["environments"]] == ["staging"]
    assert list(_by_plan(staging, "staging")) == ["search"]
    assert _by_plan(staging, "staging")["search"]["updates"][0]["text"] == (
        "Search reindex finished."
    )
    empty = page.json("/status/nowhere.json")
    assert empty["environments"] == [
        {
            "environment": "nowhere",
            "summary": "none",
            "summary_text": "No maintenance in progress",
            "maintenances": [],
        }
    ]
    status, _h, html = page.get("/status/prod")
    assert status == 200
    assert b"website" in html and b"Search reindex" not in html
    status, _h, atom = page.get("/status/staging.atom")
    assert status == 200 and b"Search reindex finished." in atom and b"website" not in atom


def test_a_secret_in_public_and_internal_messages_appears_in_no_answer(page: Page) -> None:
    """The secret went into a public and an internal message through ``${api_key}``: every
    form of the page shows the public one masked, and neither the secret nor the internal
    text anywhere."""
    seen = 0
    for path in [
        "/status",
        "/status.json",
        "/status.atom",
        "/status/prod",
        "/status/prod.json",
        "/status/prod.atom",
    ]:
        status, headers, body = page.get(path)
        assert status == 200, path
        text = body.decode()
        assert SECRET not in text and SECRET not in str(headers), path
        assert "internal:" not in text, path
        if "ref ***" in text:
            seen += 1
    assert seen == 6  # the public message is there, masked, in every form


def test_the_atom_feed_is_valid_atom(page: Page) -> None:
    """RFC 4287: the feed has id, title, updated and an author; each entry id, title, updated
    (RFC 3339) and content; ids are unique; the lifecycle is in the entries."""
    status, headers, body = page.get("/status.atom")
    assert status == 200
    assert headers["Content-Type"].startswith("application/atom+xml")
    feed = ET.fromstring(body)
    assert feed.tag == f"{ATOM}feed"
    for tag in ("id", "title", "updated"):
        assert (feed.findtext(f"{ATOM}{tag}") or "").strip(), tag
    assert feed.findtext(f"{ATOM}author/{ATOM}name") == "tminus"
    assert feed.findtext(f"{ATOM}id") == f"{page.base}/status.atom"
    entries = feed.findall(f"{ATOM}entry")
    assert len(entries) >= 5
    ids = []
    for entry in entries:
        for tag in ("id", "title", "updated", "content"):
            assert (entry.findtext(f"{ATOM}{tag}") or "").strip(), tag
        ids.append(entry.findtext(f"{ATOM}id"))
        updated = entry.findtext(f"{ATOM}updated") or ""
        assert updated.endswith("Z") and "T" in updated
    assert len(set(ids)) == len(ids)
    assert all(i and i.startswith("urn:uuid:") for i in ids)
    titles = [e.findtext(f"{ATOM}title") for e in entries]
    assert "website (prod): Scheduled maintenance" in titles
    assert "api (prod): Completed" in titles
    assert "billing (prod): Rolled back — incident" in titles
    assert "search (staging): Completed" in titles
    newest = [e.findtext(f"{ATOM}updated") or "" for e in entries]
    assert newest == sorted(newest, reverse=True)


def test_answers_are_cacheable_briefly_and_script_free(page: Page) -> None:
    """A short public max-age, an ETag that a repeated request gets a 304 for, and a
    Content-Security-Policy that allows no script. The repeated requests come in a later
    second than the first (the page shows when it was generated, to the second; the JSON to
    the microsecond). Mutation tried: the ETag hashed from the answer itself (as before
    2026-12-07, a CI flake when two requests straddled a second): fails."""
    status, headers, body = page.get("/status/prod")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "public, max-age=30"
    assert "script-src" not in headers["Content-Security-Policy"]
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert b"<script" not in body
    time.sleep(1.1)
    status, again, body2 = page.get("/status/prod", {"If-None-Match": headers["ETag"]})
    assert status == 304 and body2 == b"" and again["ETag"] == headers["ETag"]
    for form in ("/status/prod.json", "/status/prod.atom"):
        status, first, _b = page.get(form)
        assert status == 200, form
        time.sleep(0.01)
        status, again, body2 = page.get(form, {"If-None-Match": first["ETag"]})
        assert status == 304 and body2 == b"", form
    status, _h, _b = page.get("/status/prod", {"If-None-Match": '"other"'})
    assert status == 200
    status, _h, _b = page.get("/status/" + "x" * 121)
    assert status == 404


def test_the_page_in_a_browser_without_javascript(page: Page) -> None:
    """Headless Chromium, JavaScript disabled, a phone's width: the scheduled maintenance
    with its window, the public update, the completed and rolled-back states are on the page,
    and it fits the screen. ``TMINUS_SCREENSHOTS=1`` saves docs/img/status-page.png."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            ctx = browser.new_context(
                java_script_enabled=False, viewport={"width": 390, "height": 844}
            )
            tab = ctx.new_page()
            tab.goto(f"{page.base}/status")
            assert tab.title() == "Status"
            web = tab.locator("article", has_text="website")
            assert "Scheduled maintenance" in web.inner_text()
            assert "2030-01-10 02:00–04:00 Europe/Berlin" in web.inner_text()
            api = tab.locator("article", has_text="We are upgrading the API")
            assert "Completed" in api.inner_text()
            assert "The maintenance is complete." in api.inner_text()
            billing = tab.locator("article", has_text="billing")
            assert "Rolled back — incident" in billing.inner_text()
            box = web.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
            html = tab.content()
            assert SECRET not in html and "internal:" not in html
            tab.get_by_role("link", name="staging").click()
            assert tab.url == f"{page.base}/status/staging"
            assert "Search reindex finished." in tab.locator("main").inner_text()
            if os.environ.get("TMINUS_SCREENSHOTS") == "1":
                tab.set_viewport_size({"width": 760, "height": 300})
                tab.goto(f"{page.base}/status/prod")
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                tab.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
