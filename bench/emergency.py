"""Emergency actions: how soon an abort with rollback sends a canary's traffic back to stable
(issue #17 item 4: "within 50 ms of the request on this machine, the router call included";
``tminus abort``/``tminus rollback`` from a terminal "≤ 300 ms end to end").

    uv run python bench/emergency.py [--runs 7] [--parts a,b,c,d] [--trace] [--json]

In a temp directory (SQLite store): a real HAProxy in front of two real app processes, a real
``tminus serve`` (its HTTP API on 127.0.0.1), and per run a deploy started through the API
whose ``canary`` step holds 50 % (``pause: 10m``) in one of the server's workers. At a random
point of the hold, the bench aborts the deploy with rollback and reads HAProxy's weights (its
runtime API, every millisecond) until the canary pool is drained and stable has 100 %:

(a) **API**: ``POST /api/v1/deploys/ID/abort {"rollback": true}`` → stable 100 at the router,
    and → the response;
(b) **CLI**: ``tminus abort ID --rollback``, a new process as from a terminal → stable 100, and
    → the command's exit;
(c) **the old path**: (a) and (b) with the wake turned off: the server (for the API) and the
    CLI started through a wrapper of the entry point that sets ``tminus.engine.wake.SEND =
    False``, so the runner notices the request at its next poll (every 0.5 s), as before the
    wake; or, with ``--old-src DIR`` (a source tree of the code before, e.g. ``git archive
    REV src | tar -x -C DIR``; its store schema must be the current one), that tree first on
    the ``PYTHONPATH`` of the old server, its workers and the old CLI;
(d) **``tminus rollback`` of a succeeded deploy** whose canary serves 50 % (``promote:
    false``): handed to the running server (the default) against ``--no-server`` (the CLI
    runs it itself) → stable 100, and → the command's exit.

The sides are interleaved, in reverse order every other run (the server restarted between the
new and the old path), so that a change of the machine's load weighs on each alike. Also
printed from the store (its own timestamps, whatever the polling here), from the request
(``deploy.abort_requested``): the rollback's start (``deploy.rolling_back``), the router call's
start (``traffic.restoring``), the router call itself (→ ``traffic.restored``), the deploy
aborted. ``--trace`` prints each run's events. Medians and max of ``--runs``; figures are
printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import httpx

from tminus.plan.interpolate import Resolver
from tminus.plan.targets import HaproxyRouter
from tminus.routers.base import Router, RouterContext, open_router
from tminus.store.store import Store
from tminus.testing.app import AppProcess
from tminus.testing.haproxy import HaproxyServer

PLAN_NAME = "bench-emergency"
WEIGHT = 50
#: The entry point with the wake turned off (the old path).
NO_WAKE = (
    "import sys, tminus.engine.wake as w; w.SEND = False; "
    "from tminus.cli.app import main; sys.argv[0] = 'tminus'; main()"
)
TARGET_API_MS = 50.0
TARGET_CLI_MS = 300.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, work: Path, hap: HaproxyServer, old_src: str | None) -> None:
        self.work = work
        self.hap = hap
        self.old_src = old_src
        self.env = {**os.environ, "TMINUS_OPERATOR": "bench"}
        self.env.pop("TMINUS_STATE", None)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.store = Store(f"sqlite:///{work / '.tminus' / 'state.db'}")
        ctx = RouterContext(name="lb", resolver=Resolver(), state_dir=work, services={})
        self.router: Router = open_router("lb", ctx, HaproxyRouter(**hap.router_config()))
        self.server: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.token = ""
        self.trace = False

    # --- processes ----------------------------------------------------------------------------
    def argv(self, old: bool, *args: str) -> tuple[list[str], dict[str, str]]:
        env = dict(self.env)
        if not old:
            return [sys.executable, "-m", "tminus", *args], env
        if self.old_src:
            env["PYTHONPATH"] = self.old_src + os.pathsep + env.get("PYTHONPATH", "")
            return [sys.executable, "-m", "tminus", *args], env
        return [sys.executable, "-c", NO_WAKE, *args], env

    def tm(self, *args: str) -> str:
        cmd, env = self.argv(False, *args)
        proc = subprocess.run(cmd, cwd=self.work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"tminus {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def start_server(self, old: bool) -> None:
        self.stop_server()
        self.port = _free_port()
        cmd, env = self.argv(old, "serve", "--bind", f"127.0.0.1:{self.port}")
        log = open(self.work / "serve.log", "ab")  # noqa: SIM115 - closed with the process
        self.server = subprocess.Popen(cmd, cwd=self.work, env=env, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code:
                    time.sleep(1.0)  # its warm worker imports the engine
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("tminus serve did not answer in 60 s")

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        self.server = None

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )

    # --- one deploy holding 50 % -----------------------------------------------------------
    async def holding(self) -> str:
        """Start a deploy through the API; return its id once the canary holds 50 %."""
        async with self.client() as c:
            r = await c.post(f"/api/v1/plans/{PLAN_NAME}/bench/deploys", json={})
            if r.status_code != 201:
                raise RuntimeError(f"start: {r.status_code} {r.text}")
            deploy = str(r.json()["deploy"])
        deadline = time.monotonic() + 60
        while True:
            types = {e["type"] for e in self.store.events(deploy, types=("canary.weight",))}
            if "canary.weight" in types and await self.canary_weight() == WEIGHT:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{deploy} never held {WEIGHT}%: {self.store.deploy(deploy)}")
            await asyncio.sleep(0.05)
        # Well into the hold, at a random point of the runner's polls (every 0.5 s from the
        # hold's start): the old path's wait is then as long as chance makes it, not fixed.
        await asyncio.sleep(0.7 + random.random() * 0.5)
        return deploy

    async def canary_weight(self) -> int:
        return int((await self.router.get_weights()).get("canary", -1))

    async def until_stable(self, t0: float, limit: float = 30.0) -> float:
        """Seconds from ``t0`` until HAProxy gives stable 100 % (the canary drained)."""
        while True:
            if await self.canary_weight() == 0:
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > limit:
                raise RuntimeError(f"traffic not back to stable after {limit:g} s")
            await asyncio.sleep(0.001)

    async def ended(self, deploy: str) -> None:
        deadline = time.monotonic() + 60
        while self.store.deploy(deploy)["state"] not in ("aborted", "rolled_back", "failed"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{deploy} did not end: {self.store.deploy(deploy)['state']}")
            await asyncio.sleep(0.02)

    def recorded(self, deploy: str) -> dict[str, float]:
        evs = self.store.events(deploy)

        def ts(etype: str) -> datetime:
            return next(e["ts"] for e in evs if e["type"] == etype)

        asked = ts("deploy.abort_requested")
        if self.trace:
            for e in evs:
                if e["ts"] >= asked:
                    ms = (e["ts"] - asked).total_seconds() * 1000
                    print(f"    {ms:8.1f} ms  {e['type']}: {e['message']}", file=sys.stderr)

        # A canary's own hold may see the request before the supervisor (no step.stopped then):
        # the rollback's start is recorded either way.
        def ms(etype: str) -> float:
            return (ts(etype) - asked).total_seconds() * 1000

        return {
            "recorded_rollback_ms": ms("deploy.rolling_back"),
            "recorded_router_call_ms": ms("traffic.restoring"),
            "router_call_ms": ms("traffic.restored") - ms("traffic.restoring"),
            "recorded_aborted_ms": ms("deploy.aborted"),
        }

    # --- the two ways to ask ----------------------------------------------------------------
    async def by_api(self) -> dict[str, float]:
        deploy = await self.holding()
        async with self.client() as c:
            answered = 0.0

            async def ask() -> httpx.Response:
                nonlocal answered
                r = await c.post(f"/api/v1/deploys/{deploy}/abort", json={"rollback": True})
                answered = time.perf_counter() - t0
                return r

            t0 = time.perf_counter()
            post = asyncio.ensure_future(ask())
            stable = await self.until_stable(t0)
            r = await post
        if r.status_code != 200:
            raise RuntimeError(f"abort: {r.status_code} {r.text}")
        await self.ended(deploy)
        return {"stable_ms": stable * 1000, "answer_ms": answered * 1000} | self.recorded(deploy)

    async def by_cli(self, old: bool) -> dict[str, float]:
        deploy = await self.holding()
        cmd, env = self.argv(old, "abort", deploy, "--rollback")
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=self.work,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        waited = asyncio.ensure_future(proc.communicate())
        stable = await self.until_stable(t0)
        out, _ = await waited
        exited = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"tminus abort: {out.decode()}")
        await self.ended(deploy)
        return {"stable_ms": stable * 1000, "exit_ms": exited * 1000} | self.recorded(deploy)

    async def succeeded(self) -> str:
        """Start a deploy of the plan that ends with the canary at 50 %; its id once it
        succeeded."""
        async with self.client() as c:
            r = await c.post(f"/api/v1/plans/{PLAN_NAME}-done/bench/deploys", json={})
            if r.status_code != 201:
                raise RuntimeError(f"start: {r.status_code} {r.text}")
            deploy = str(r.json()["deploy"])
        deadline = time.monotonic() + 60
        while self.store.deploy(deploy)["state"] != "succeeded":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{deploy} did not succeed: {self.store.deploy(deploy)}")
            await asyncio.sleep(0.05)
        if await self.canary_weight() != WEIGHT:
            raise RuntimeError(f"{deploy} succeeded without the canary at {WEIGHT}%")
        await asyncio.sleep(0.5)  # the server's worker has exited, its warm one is ready
        return deploy

    async def rollback_by_cli(self, here: bool) -> dict[str, float]:
        """``tminus rollback`` of a succeeded deploy: handed to the server, or ``--no-server``."""
        deploy = await self.succeeded()
        cmd, env = self.argv(False, "rollback", deploy, *(["--no-server"] if here else []))
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=self.work,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        waited = asyncio.ensure_future(proc.communicate())
        stable = await self.until_stable(t0)
        out, _ = await waited
        exited = time.perf_counter() - t0
        text = out.decode()
        if proc.returncode != 0 or ("tminus serve (pid" in text) == here:
            raise RuntimeError(f"tminus rollback (here={here}) exit {proc.returncode}: {text}")
        if self.store.deploy(deploy)["state"] != "rolled_back":
            raise RuntimeError(f"{deploy}: {self.store.deploy(deploy)['state']}")
        if self.trace:
            print(f"    CLI output: {text!r}", file=sys.stderr)
            drive = [
                r
                for r in self.store.timers(deploy, kinds=("drive",))
                if r["key"].startswith("cli:")
            ]
            asked = drive[0]["due_at"] if drive else None
            for e in self.store.events(deploy):
                if asked is not None and e["ts"] >= asked:
                    ms = (e["ts"] - asked).total_seconds() * 1000
                    print(f"    {ms:8.1f} ms  {e['type']}: {e['message']}", file=sys.stderr)
        return {"stable_ms": stable * 1000, "exit_ms": exited * 1000}


def _plan(hap: HaproxyServer, name: str = PLAN_NAME, hold: bool = True) -> str:
    """A canary at 50 %: held 10 minutes (``hold``), or kept for a later phase (the deploy
    succeeds with the canary serving its 50 %: ``tminus rollback`` puts stable back)."""
    ramp: dict[str, Any] = {"weight": WEIGHT, "pause": "10m"} if hold else {"weight": WEIGHT}
    return json.dumps(
        {
            "tminus": 1,
            "name": name,
            "environment": "bench",
            "targets": {"routers": {"lb": hap.router_config()}},
            "phases": [
                {
                    "name": "Canary",
                    "steps": [
                        {
                            "kind": "canary",
                            "router": "lb",
                            "stable": "stable",
                            "canary": "canary",
                            "steps": [ramp],
                            "promote": hold,
                        }
                    ],
                }
            ],
        },
        indent=1,
    )


def _summary(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = rows[0].keys() if rows else []
    return {
        k: {"median": statistics.median(r[k] for r in rows), "max": max(r[k] for r in rows)}
        for k in keys
    }


async def bench(
    runs: int, parts: set[str], old_src: str | None, trace: bool = False
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tminus-bench-emergency-"))
    out: dict[str, Any] = {
        "cores": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "runs": runs,
        "old_path": "--old-src " + old_src if old_src else "wake.SEND = False",
    }
    try:
        with (
            AppProcess("stable") as stable,
            AppProcess("canary") as canary,
            HaproxyServer({"stable": [stable.address], "canary": [canary.address]}) as hap,
        ):
            (work / "plan.yaml").write_text(_plan(hap))
            (work / "done.yaml").write_text(_plan(hap, PLAN_NAME + "-done", hold=False))
            b = Bench(work, hap, old_src)
            b.trace = trace
            b.token = b.tm("tokens", "create", "--person", "bench").strip().splitlines()[-1]
            b.tm("access", "grant", "bench", "operator")
            try:
                b.start_server(old=False)
                async with b.client() as c:
                    for f in ("plan.yaml", "done.yaml"):
                        r = await c.post("/api/v1/plans", json={"path": str(work / f)})
                        if r.status_code != 201:
                            raise RuntimeError(f"register: {r.status_code} {r.text}")
                # Interleaved (the order reversed every other run), so that a machine whose
                # load changes during the bench weighs on every side alike.
                names = [
                    n
                    for n, part in (
                        ("a_api", "a"),
                        ("b_cli", "b"),
                        ("c_cli_old", "c"),
                        ("c_api_old", "c"),
                        ("d_rollback_served", "d"),
                        ("d_rollback_here", "d"),
                    )
                    if part in parts
                ]
                rows: dict[str, list[dict[str, float]]] = {n: [] for n in names}
                server_old = False
                for i in range(runs):
                    for name in names if i % 2 == 0 else names[::-1]:
                        if (name == "c_api_old") != server_old:
                            server_old = name == "c_api_old"
                            b.start_server(old=server_old)
                        if name.startswith("d_"):
                            row = await b.rollback_by_cli(here=name == "d_rollback_here")
                        elif name in ("a_api", "c_api_old"):
                            row = await b.by_api()
                        else:
                            row = await b.by_cli(old=name == "c_cli_old")
                        print(f"  ({name}) run {i + 1}: {_fmt(row)}", file=sys.stderr)
                        rows[name].append(row)
                for n in names:
                    out[n] = {"runs": rows[n], **_summary(rows[n])}
            finally:
                b.stop_server()
                b.store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _fmt(row: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in row.items())


def _print(res: dict[str, Any]) -> None:
    print(
        f"{res['cores']} cores, load average {res['load_average']:.2f}, {res['runs']} runs "
        f"each; old path: {res['old_path']}"
    )
    names = {
        "a_api": "(a) API abort+rollback",
        "b_cli": "(b) CLI tminus abort --rollback",
        "c_api_old": "(c) API, no wake (old)",
        "c_cli_old": "(c) CLI, no wake (old)",
        "d_rollback_served": "(d) tminus rollback, served",
        "d_rollback_here": "(d) tminus rollback --no-server",
    }
    cols = [
        ("stable_ms", "-> stable 100"),
        ("answer_ms", "-> answer"),
        ("exit_ms", "-> CLI exit"),
        ("recorded_rollback_ms", "rec. rollback"),
        ("recorded_router_call_ms", "rec. router call"),
        ("router_call_ms", "router call"),
        ("recorded_aborted_ms", "rec. aborted"),
    ]
    print(f"{'ms, median (max)':<34}" + "".join(f"{h:>17}" for _, h in cols))
    for key, label in names.items():
        if key not in res:
            continue
        cells = []
        for k, _ in cols:
            v = res[key].get(k)
            cells.append(f"{v['median']:.0f} ({v['max']:.0f})" if v else "-")
        print(f"{label:<34}" + "".join(f"{c:>17}" for c in cells))
    print(
        f"targets: API -> stable 100 < {TARGET_API_MS:g} ms; CLI end to end <= {TARGET_CLI_MS:g} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--parts", default="a,b,c,d")
    ap.add_argument("--old-src", default=None, help="source tree of the old path (PYTHONPATH)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--trace", action="store_true", help="print each run's recorded events")
    args = ap.parse_args()
    res = asyncio.run(bench(args.runs, set(args.parts.split(",")), args.old_src, args.trace))
    if args.json:
        print(json.dumps(res, indent=1, default=str))
    else:
        _print(res)


if __name__ == "__main__":
    main()
