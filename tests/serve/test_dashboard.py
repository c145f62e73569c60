"""The dashboard of ``tminus serve`` in a real headless Chromium (Debian's ``chromium``,
driven by Playwright through ``executable_path``), against a real server, store and workers.

What a release manager does from a browser: log in with a token, start a deploy, watch it
wait for its approval live, a second person approves in another browser context and the
first page shows the deploy succeed without a reload; the abort button rolls a running
deploy back; a viewer sees no action buttons and gets 403 when posting anyway; a post
without the CSRF token is refused.

Mutations tried (each makes a test here fail):
- ``liveDeploy()`` not called in ``dash.js``: the first page never shows "succeeded";
- the template's ``{% if may.abort %}`` removed: the viewer sees the abort button;
- ``_check_unsafe`` skipped for sessions in ``serve/auth.py``: the CSRF-less post succeeds.

``TMINUS_SCREENSHOTS=1`` saves the pages to ``docs/img/`` (the README links them).
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Browser, expect

from tests.serve.conftest import Serve, login, shot, token, write

PLAN = """
name: dash
environment: prod
roles:
  operator: {people: [alice]}
  release_manager: {people: [bob]}
approvals:
  required: [release_manager]
  separation_of_duties: true
checklist:
  - item: Release notes reviewed
phases:
  - name: prepare
    estimate: 10s
    steps:
      - kind: run
        command: "echo prepared >> effects.log"
        undo: [{kind: run, command: "echo unprepared >> effects.log"}]
  - name: release
    estimate: 1m
    steps:
      - kind: run
        command: "{release}"
"""


def _setup(s: Serve, release: str) -> dict[str, Any]:
    write(s.cwd / "plan.yaml", PLAN.replace("{release}", release))
    tokens = {p: token(s, p) for p in ("alice", "bob", "carol")}
    s.tm("access", "grant", "alice", "operator")
    s.tm("access", "grant", "bob", "approver")
    s.tm("access", "grant", "carol", "viewer")
    return tokens


def test_start_watch_approve_live(serve_env: Serve, browser: Browser) -> None:
    s = serve_env
    tokens = _setup(s, "echo released >> effects.log")
    _, port = s.start()
    alice = login(browser, port, tokens["alice"])
    alice.fill("#register-form input[name=path]", str(s.cwd / "plan.yaml"))
    alice.click("#register-form button[type=submit]")
    expect(alice.locator("#start-result")).to_contain_text("registered dash (prod)")
    alice.wait_for_selector("#start-plan")  # the page reloads with the plan to start
    alice.select_option("#start-plan", "dash/prod")
    alice.once("dialog", lambda d: d.accept())
    alice.click("#start-form button[type=submit]")
    alice.wait_for_url("**/deploys/dash-1")
    # the checklist item is not confirmed yet: the deploy waits for it, then for bob
    expect(alice.locator("#state")).to_have_text("awaiting_confirmation", timeout=20_000)
    alice.select_option("select[name=items]", "Release notes reviewed")
    alice.click("#btn-confirm")
    expect(alice.locator("#state")).to_have_text("awaiting_approval", timeout=20_000)
    shot(alice, "dashboard-deploy-waiting.png")
    assert alice.locator("#btn-abort-rollback").count() == 1

    bob = login(browser, port, tokens["bob"])
    bob.goto(f"http://127.0.0.1:{port}/deploys/dash-1")
    bob.select_option("select[name=role]", "release_manager")
    bob.click("#btn-approve")
    expect(bob.locator("#action-result")).to_contain_text("approved dash-1 as bob")
    # alice's page was not reloaded: the stream brings the end
    expect(alice.locator("#state")).to_have_text("succeeded", timeout=20_000)
    expect(alice.locator("#log")).to_contain_text("approval.given")
    shot(alice, "dashboard-deploy-succeeded.png")
    assert (s.cwd / "effects.log").read_text() == "prepared\nreleased\n"
    alice.goto(f"http://127.0.0.1:{port}/")
    expect(alice.locator("table.deploys")).to_contain_text("dash-1")
    shot(alice, "dashboard-list.png")

    # readable on a phone (no page-wide sideways scroll: wide tables scroll inside
    # themselves), and printable (no buttons, the whole log)
    page = login(browser, port, tokens["alice"], phone=True)
    page.goto(f"http://127.0.0.1:{port}/deploys/dash-1", wait_until="load")
    expect(page.locator("#state")).to_have_text("succeeded")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    shot(page, "dashboard-phone.png")
    page.emulate_media(media="print")
    expect(page.locator("#actions")).to_be_hidden()
    expect(page.locator("#log")).to_be_visible()
    page.context.close()


def test_abort_button_rolls_back_and_viewer_cannot_act(serve_env: Serve, browser: Browser) -> None:
    s = serve_env
    tokens = _setup(s, "touch sleeping && sleep 60")
    _, port = s.start()
    s.tm("schedule", "plan.yaml", "--at", "+2s", "--confirm", "Release notes reviewed")
    s.wait_for("the deploy to wait for bob", lambda: s.status("dash-1")["state"] != "scheduled")
    s.tm("approve", "dash-1", "--role", "release_manager", "--as", "bob")
    s.wait_for("the sleep to start", lambda: (s.cwd / "sleeping").exists())

    carol = login(browser, port, tokens["carol"])
    carol.goto(f"http://127.0.0.1:{port}/deploys/dash-1")
    expect(carol.locator("#state")).to_have_text("running")
    expect(carol.locator("#no-actions")).to_be_visible()
    assert carol.locator("button.danger").count() == 0
    status = carol.evaluate(
        """async () => (await fetch('/api/v1/deploys/dash-1/abort', {method: 'POST',
            headers: {'Content-Type': 'application/json',
                      'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
            body: JSON.stringify({rollback: true})})).status"""
    )
    assert status == 403

    alice = login(browser, port, tokens["alice"])
    no_csrf = alice.evaluate(
        """async () => (await fetch('/api/v1/deploys/dash-1/abort', {method: 'POST',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({rollback: true})})).status"""
    )
    assert no_csrf == 403
    assert s.status("dash-1")["state"] == "running"
    alice.goto(f"http://127.0.0.1:{port}/deploys/dash-1")
    alice.once("dialog", lambda d: d.accept())
    alice.click("#btn-abort-rollback")
    expect(alice.locator("#action-result")).to_contain_text("abort requested")
    expect(alice.locator("#state")).to_have_text("aborted", timeout=30_000)
    assert (s.cwd / "effects.log").read_text() == "prepared\nunprepared\n"
    # carol's page followed it live too
    expect(carol.locator("#state")).to_have_text("aborted", timeout=10_000)
