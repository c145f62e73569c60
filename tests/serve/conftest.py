"""A real ``tminus serve`` process for tests, on a travelled clock.

The server runs through the testing seam with ``TMINUS_CLOCK_FILE``: :meth:`Serve.travel`
writes a new offset, and the server, the workers it starts and the CLI calls of the test all
read the same clock, so a test goes from T-48h to T+30d in seconds without sleeping for
days. Nothing else is stood in for: the store, the workers and the HTTP port are real.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm
from tminus.testing.seam import travel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """A working directory, a travelled clock, CLI calls and ``tminus serve`` processes."""

    def __init__(self, cwd: Path, state: str | None = None) -> None:
        self.cwd = cwd
        self.clock = cwd / "clock"
        travel(self.clock, timedelta())
        env = {"TMINUS_CLOCK_FILE": str(self.clock)}
        if state:
            env["TMINUS_STATE"] = state
        self.tm = Tm(cwd, env)
        if state:
            self.tm.env["TMINUS_STATE"] = state
        self.procs: list[subprocess.Popen[bytes]] = []
        self.port: int | None = None

    # --- time -----------------------------------------------------------------------------
    def travel_to(self, at: datetime) -> None:
        """Make "now" ``at`` for every process on this clock; with a server running, return
        once it has ticked at the new time (and beaten: it beats on a jump)."""
        travel(self.clock, at - datetime.now(UTC))
        if self.port is None or self.procs[-1].poll() is not None:
            return

        def ticked() -> bool:
            _status, body = self.get(self.port or 0, "/healthz")
            last = json.loads(body)["last_tick"]
            return last is not None and datetime.fromisoformat(last) >= at

        self.wait_for("the server to tick at the new time", ticked, timeout=15, every=0.05)

    # --- servers ----------------------------------------------------------------------------
    def start(self, name: str = "serve", *extra: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        log = open(self.cwd / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "tminus.testing.seam", "serve", "--bind", f"127.0.0.1:{port}"),
                *extra,
            ],
            cwd=self.cwd,
            env=self.tm.env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        self.procs.append(proc)
        # 120 s: the machine is shared (up to eight test runs on two cores start it slowly)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"tminus serve exited {proc.returncode}: {self.log(name)}")
            try:
                self.get(port, "/healthz")
                self.port = port
                return proc, port
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"tminus serve did not answer /healthz in 120 s: {self.log(name)}")

    def log(self, name: str = "serve") -> str:
        path = self.cwd / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def get(port: int, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # --- the store ----------------------------------------------------------------------------
    def events(self, deploy: str) -> list[dict[str, Any]]:
        proc = self.tm("log", deploy, "--output", "json", check=0)
        return list(json.loads(proc.stdout))

    def status(self, deploy: str) -> dict[str, Any]:
        return dict(self.tm.json("status", deploy))

    def wait_for(
        self, what: str, cond: Callable[[], Any], timeout: float = 30.0, every: float = 0.2
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{self.log()}")
            time.sleep(every)


@pytest.fixture
def serve_env(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path)
    try:
        yield s
    finally:
        s.stop_all()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


os.environ.setdefault("TMINUS_OPERATOR", "alice")


# --- the dashboard in a real headless Chromium (``browser``: tests/conftest.py) ----------------
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"


def token(s: Serve, person: str) -> str:
    """A token made with ``tminus tokens create`` (printed alone on its last line)."""
    return s.tm("tokens", "create", "--person", person).stdout.strip().splitlines()[-1]


def login(browser: Any, port: int, token: str, *, phone: bool = False) -> Any:
    """A new browser context (a person) logged in with ``token`` through the login page."""
    if phone:
        ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    else:
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    page = ctx.new_page()
    page.goto(f"http://127.0.0.1:{port}/")
    assert "/login" in page.url  # no anonymous access
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"http://127.0.0.1:{port}/")
    return page


def shot(page: Any, name: str) -> None:
    """With ``TMINUS_SCREENSHOTS=1``: the whole page saved as ``docs/img/NAME``."""
    if os.environ.get("TMINUS_SCREENSHOTS"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / name), full_page=True)
