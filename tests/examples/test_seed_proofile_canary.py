"""Rehearsals of seed 003 (proofile-web)'s canary in which every analysis check has data, so
that the analysis itself decides: a healthy canary goes 5% → 25% → 100% with no promotion
given by anyone, and a canary that starts failing at 5% is taken off and the deploy rolls back
with no one deciding.

The plan is the seed's (examples/seeds/proofile-web.yaml) with one change (a rehearsal
stand-in, `proofile_plan`): phase 1's `ssh` step "Deploy to 5% of production servers" (and
its undo) runs the same command here, as a `run` step, instead of over SSH on web-canary-1
(the machine has no `deploy` user or SSH host on 127.0.0.1:2222). The holds and the checks'
`interval` are the plan's variables, shortened with `--var` (the seed's values are their
defaults). Everything the analysis measures is real: Prometheus scrapes the two app processes
(`app="proofile"` added by the scrape config) and a small exporter
(tests/examples/proofile_exporter.py: a stand-in for node exporter, cAdvisor and the
frontend's Web Vitals, measuring the app processes and page loads through nginx); Redis,
PostgreSQL and nginx are real servers; the traffic is constant user load through nginx.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import Tm
from tests.examples.test_seed_progressive import (
    SEEDS,
    LabelledPrometheus,
    Load,
    ProofileNginx,
    redis_url,  # noqa: F401 (a fixture of this module too)
    seed_ports,
    store,
    weights,
)
from tminus.plan.loader import parse_yaml
from tminus.routers.nginx import render_include
from tminus.store.store import Store
from tminus.testing.app import AppProcess, free_port

PHASE_1 = "Phase 1: Canary Deployment (5% Traffic) - Day 1-2"
PHASE_2 = "Phase 2: Graduated Rollout (25% Traffic) - Day 3-5"
PHASE_3 = "Phase 3: Full Production (100% Traffic) - Day 6+"
EXPORTER = Path(__file__).with_name("proofile_exporter.py")
#: The shortened cadence: the seed's 5-minute metrics and 15-minute logs, 2-day, 3-day and
#: 1-hour holds.
HOLD_S = 4
#: Seconds of memory data before the canary first takes traffic (`Rehearsal.baseline`).
BASELINE_S = 25
CADENCE = {
    "metrics_every": "1s",
    "logs_every": "2s",
    "rate_window": "10s",
    "canary_5_hold": f"{HOLD_S}s",
    "canary_25_hold": f"{HOLD_S}s",
    "canary_100_hold": f"{HOLD_S}s",
}
#: Every check of the canary steps' analysis, by phase (the test asserts the plan agrees).
ANALYSIS = {
    PHASE_1: ["error_rate", "latency_p95", "cpu_usage", "memory_usage", "memory_growth",
              "error_logs", "web_vitals_lcp", "critical_issues"],
    PHASE_2: ["error_rate", "latency_p95", "cpu_usage", "memory_usage", "memory_growth",
              "db_connections", "cache_hit_rate", "error_logs", "critical_issues"],
    PHASE_3: ["error_rate", "latency_p95", "cpu_usage", "memory_usage", "memory_growth",
              "critical_issues"],
}  # fmt: skip


def proofile_plan() -> dict[str, Any]:
    """The seed's plan, with phase 1's SSH deploy to the canary server (and its undo) run here
    as `run` steps of the same commands and environment."""
    data, _, problems = parse_yaml((SEEDS / "proofile-web.yaml").read_text(), "proofile-web.yaml")
    assert not problems
    phases = {p["name"]: p for p in data["phases"]}
    for name, checks in ANALYSIS.items():
        canary = next(s for s in phases[name]["steps"] if s["kind"] == "canary")
        used = [a if isinstance(a, str) else a["use"] for a in canary["analysis"]]
        assert used == checks, (name, used)
    steps = phases[PHASE_1]["steps"]
    ssh = steps[0]
    assert ssh["kind"] == "ssh" and ssh["id"] == "deploy_canary" and ssh["on"] == "canary"
    undo = ssh["undo"][0]
    steps[0] = {
        "kind": "run",
        "id": "deploy_canary",
        "name": f"{ssh['name']} (rehearsal: run here, not over SSH)",
        "command": ssh["command"],
        "env": ssh["env"],
        "undo": [
            {"kind": "run", "name": f"{undo['name']} (rehearsal: here)", "command": undo["command"]}
        ],
    }
    plan: dict[str, Any] = data
    return plan


@contextmanager
def exporter(processes: dict[str, int], page: str) -> Iterator[str]:
    """The stand-in exporter (see its docstring) on a free port; yields its address."""
    port = free_port()
    args = [sys.executable, str(EXPORTER), "--port", str(port), "--page", page]
    for node, pid in processes.items():
        args += ["--process", f"{node}={pid}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the exporter did not start"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


async def warm_up(*apps: AppProcess, clients: int = 200, rounds: int = 5) -> None:
    """Before their memory is measured, each app answers ``rounds`` bursts of ``clients``
    requests at once, one connection each (as nginx opens them): its allocator grows to a
    peak the rehearsal's load stays under. Then (`Rehearsal.services`) the user load goes
    through nginx at 5%, 25%, 100% and 0% canary for 1 s each, reloads included.

    Why: `memory_growth` projects a few seconds of resident memory to an hour, so one new
    4 KiB page in ~50 MB reads as 1-3% an hour (the limit is 2%). Measured without a
    warm-up: +140 KB in the first 5 s at 60 req/s through nginx, flat only after ~25 s
    (10-15% an hour); with the bursts alone, the canary still grew by one or two pages
    when it first took traffic through a reloaded nginx (2.9% once); with both, 0 bytes
    through a later 5/25/100% ramp in 3 runs out of 3."""

    async def one(app: AppProcess) -> None:
        reader, writer = await asyncio.open_connection(app.host, app.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: warm-up\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]

    for _ in range(rounds):
        await asyncio.gather(*(one(a) for a in apps for _ in range(clients)))


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def app_checkout(root: Path) -> Path:
    """`app_dir`: a clone of a local bare `origin` whose tags are the seed's previous and
    new releases; the deploy step's `git fetch --tags && git checkout ${release}` runs here."""
    origin, work = root / "origin.git", root / "app"
    git(root, "init", "-q", "--bare", str(origin))
    git(root, "init", "-q", str(work))
    for tag in ("prod-v1.0.0", "prod-v1.1.0"):
        (work / "VERSION").write_text(tag + "\n")
        git(work, "add", "VERSION")
        git(work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", tag)
        git(work, "tag", tag)
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "-q", "origin", "HEAD:refs/heads/main", "--tags")
    git(work, "checkout", "-q", "prod-v1.0.0")
    return work


class Rehearsal:
    """The machine of one rehearsal: stand-in tools, the apps, nginx, user load, the exporter
    and Prometheus; ``run`` starts the plan's phases through the CLI."""

    def __init__(self, tm: Tm, pg_url: str, redis: str) -> None:
        self.tm, self.redis = tm, redis
        bin_dir = tm.cwd / "bin"
        bin_dir.mkdir()
        tools = {
            # `npx playwright test [--project=core]`: open the page the test would open
            "npx": '#!/bin/sh\nexec curl -fsS -o /dev/null "$BASE_URL/"\n',
            # `ssh ... "cd APP && docker-compose logs ... | grep -c ERROR"`: run it here
            "ssh": '#!/bin/sh\nfor last; do :; done\nexec sh -c "$last"\n',
            # build/up/logs: nothing to build or start (the apps run), no log lines
            "docker-compose": "#!/bin/sh\nexit 0\n",
        }
        for name, text in tools.items():
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        (tm.cwd / "repo" / "frontend").mkdir(parents=True)
        self.app_dir = app_checkout(tm.cwd)
        self.nginx_dir = tm.cwd / ".tminus" / "rehearsal" / "proofile-web" / "nginx"
        self.nginx_dir.mkdir(parents=True)
        self.plan = tm.cwd / "proofile-web.yaml"
        self.plan.write_text(json.dumps(proofile_plan(), indent=1))
        tm.env.update(
            {
                "PROOFILE_REPO": str(tm.cwd / "repo"),
                "DATABASE_URL": pg_url,
                "PATH": f"{bin_dir}:{os.environ['PATH']}",
            }
        )

    @contextmanager
    def services(self, load_rps: float = 60) -> Iterator[Rehearsal]:
        pools = {"stable": ["127.0.0.1:8001"], "canary": ["127.0.0.1:8002"]}
        with (
            seed_ports(),
            AppProcess("stable", port=8001) as self.stable,
            AppProcess("canary", port=8002) as self.canary,
            ProofileNginx(
                pools,
                upstream="proofile_backend",
                weights={"stable": 100, "canary": 0},  # before phase 1
                root=self.nginx_dir,
            ) as self.ngx,
            Load(self.ngx.url, load_rps) as self.load,
        ):
            assert self.stable.proc and self.canary.proc
            pids = {"web-stable-1": self.stable.proc.pid, "web-canary-1": self.canary.proc.pid}
            asyncio.run(warm_up(self.stable, self.canary))
            for w in (5, 25, 100, 0):  # the warm-up's second half: see `warm_up`
                self.split(w)
                time.sleep(1.0)
            with (
                exporter(pids, f"{self.ngx.url}/") as addr,
                LabelledPrometheus(
                    [self.stable.address, self.canary.address, addr], {"app": "proofile"}
                ) as self.prom,
            ):
                self.measured_from = time.monotonic()
                time.sleep(1.5)  # a few scrapes: rate() and deriv() need two samples
                yield self

    def baseline(self) -> None:
        """Until Prometheus has BASELINE_S of the apps' memory before the canary takes
        traffic: `memory_growth` fits a line through all of it and projects it to an hour,
        so the shorter the data, the more one new 4 KiB page weighs (measured with the 10-20 s
        a rehearsal has by then: 2.9% and 5.3% an hour, over the seed's 2% limit; computed for
        25 s, a page when the canary starts taking traffic weighs under 1%)."""
        time.sleep(max(0.0, self.measured_from + BASELINE_S - time.monotonic()))

    def split(self, canary: int) -> None:
        """Set the split by hand (the warm-up only): the include file, then a reload."""
        pools = self.ngx.pools
        text = render_include("test", "proofile_backend", pools, {"stable": 100 - canary,
                              "canary": canary})  # fmt: skip
        self.ngx.include.write_text(text)
        reload = [self.ngx.binary, "-p", str(self.ngx.dir), "-c", str(self.ngx.config)]
        subprocess.run([*reload, "-s", "reload"], check=True, capture_output=True)

    def run(self, *phases: str) -> subprocess.CompletedProcess[str]:
        args = ["run", str(self.plan), *(a for p in phases for a in ("--phase", p))]
        args += ["--skip-checklist"]
        values = {
            "api_url": self.ngx.url,
            "redis_url": self.redis,
            "prometheus_url": self.prom.url,
            "app_dir": str(self.app_dir),
            "nginx_dir": str(self.nginx_dir),
            **CADENCE,
        }
        for k, v in values.items():
            args += ["--var", f"{k}={v}"]
        return self.tm(*args)

    def approve_and_resume(self, deploy: str) -> subprocess.CompletedProcess[str]:
        self.tm("approve", deploy, "--role", "release_manager", "--as", "rehearsal", check=0)
        return self.tm("resume", deploy)

    def query(self, promql: str) -> float:
        result = self.prom.query(promql)["result"]
        assert len(result) == 1, (promql, result)
        return float(result[0]["value"][1])


def canary_rows(st: Store, deploy: str) -> list[dict[str, Any]]:
    rows = st.step_rows(deploy)
    return [r for r in rows.values() if r["kind"] == "canary"]


def test_proofile_canary_promoted_by_analysis(
    tm: Tm,
    pg_url: str,
    redis_url: str,  # noqa: F811 (the fixture imported above)
) -> None:
    """Phases 1-3 (5% → 25% → 100%) under constant user traffic (60 req/s): each canary
    hold ends with every analysis check measured with data and passing, so the analysis moves
    the rollout on; nobody promotes anything. At the end nginx sends every request to the new
    version and the deploy has succeeded. No user request fails.

    Stand-ins: the backend is two `tminus.testing.app` processes ("stable" on 8001, "canary"
    on 8002), both the same healthy app; phase 1's `ssh` deploy (and its undo) is a local
    `run` step of the same command (`proofile_plan`), in a git checkout whose `origin` has
    the two release tags; `docker-compose` is `exit 0` (nothing to build or start: the apps
    already run, and it prints no log, so `error_logs` counts 0 ERROR lines and cannot fail);
    `ssh` in the `error_logs` command runs its command here; `npx` is one `curl -f` of
    `$BASE_URL/` instead of `npx playwright test`. The exporter (proofile_exporter.py)
    stands in for node exporter, cAdvisor and the Web Vitals: `cpu_usage` is the two app
    processes' average CPU share, `memory_usage` their resident memory against a 512 MiB
    budget each, `memory_growth` the projection to one hour of their resident memory's
    derivative over the few seconds of data, `web_vitals_lcp` the time a client takes to load
    the page through nginx (no browser). `critical_issues` is always 0 (Prometheus has no alert
    rules). `cache_hit_rate` reads a private Redis where the test made 20 hits (the app uses no
    Redis); `db_connections` counts connections on a scratch database no app uses. The
    integrations endpoint is an nginx `location` answering `{"status": "ok"}`.

    Reductions: `--phase` 1, 2 and 3 (not the database phase or the sign-offs),
    `--skip-checklist`; `--var`: the 2-day, 3-day and 1-hour holds are 4 s each, the checks'
    5-minute interval 1 s and `error_logs`' 15 minutes 2 s, the 5-minute `rate()` windows
    10 s, and `api_url`, `redis_url`, `prometheus_url`, `app_dir`, `nginx_dir`; the `[30m]`
    and `[1h]` windows hold the seconds of data since Prometheus started. Before anything is
    measured the apps are warmed up (`warm_up`: bursts of connections, then the user load
    through nginx at 5/25/100/0% canary, 1 s each) and Prometheus gathers 25 s of memory data
    (`Rehearsal.baseline`): without them, `memory_growth` fails the healthy canary. The
    plan's approval and the two go/no-go approvals are given by the test (they are not
    promotions: the canary steps see none, asserted).

    Mutations (setup), each tried once or twice while writing this test, each time the healthy
    canary was rolled back by `memory_growth` at 5%: no warm-up and no baseline (13.5% and
    14.3% an hour); the bursts only (2.9%); bursts and nginx ramp, no baseline (5.3%). Also
    `cpu_usage` over the seed's `[5m]` window with seconds of data (rate() divides by the whole
    5 minutes: 92-95% "CPU", CRITICAL), which is why `rate_window` is a variable.
    """
    r = Rehearsal(tm, pg_url, redis_url)
    with r.services():
        first = r.run(PHASE_1, PHASE_2, PHASE_3)
        assert first.returncode == 3, first.stdout + first.stderr  # the plan's approval
        deploy = tm.latest()["id"]
        r.baseline()
        step = r.approve_and_resume(deploy)  # phase 1: 5%, analysed, held for phase 2
        assert step.returncode == 3, step.stdout + step.stderr
        assert tm.json("status", deploy)["state"] == "awaiting_approval"  # go/no-go
        assert weights(r.ngx) == {"stable": 95, "canary": 5}
        step = r.approve_and_resume(deploy)  # go: phase 2, 25%, held for phase 3
        assert step.returncode == 3, step.stdout + step.stderr
        info = tm.json("status", deploy)
        assert info["state"] == "awaiting_approval", (info.get("reason"), tm("log", deploy).stdout)
        assert weights(r.ngx) == {"stable": 75, "canary": 25}
        done = r.approve_and_resume(deploy)  # go: phase 3, 100%, promoted
        assert done.returncode == 0, done.stdout + done.stderr
        assert weights(r.ngx) == {"stable": 0, "canary": 100}
        finished = time.time()
        time.sleep(1.0)
        figures = {
            name: r.query(q)
            for name, q in (
                ("cpu", '1 - avg(rate(node_cpu_seconds_total{mode="idle"}[10s]))'),
                ("memory", "1 - sum(node_memory_MemAvailable_bytes)"
                 " / sum(node_memory_MemTotal_bytes)"),
                ("growth", "sum(deriv(container_memory_working_set_bytes[1h])) * 3600"
                 " / sum(container_memory_working_set_bytes)"),
                ("lcp", "histogram_quantile(0.75, sum by (le)"
                 " (rate(web_vitals_lcp_seconds_bucket[30m])))"),
            )
        }  # fmt: skip
        print("at 100%:", {k: round(v, 4) for k, v in figures.items()})
        result = r.load.stop()

    st = store(tm)  # one Store in this process, opened once nothing else writes
    assert st.deploy(deploy)["state"] == "succeeded"
    assert result.failed == 0, result.failures()[:5]
    after = {q.body.strip() for q in result.requests if q.started > finished}
    assert after == {"canary"}  # real requests through nginx: all on the new version
    assert 0 < figures["cpu"] < 0.6 and 0 < figures["memory"] < 0.8, figures
    evs = st.events(deploy)
    assert [e["data"]["weight"] for e in evs if e["type"] == "canary.weight"] == [5, 25, 100]
    assert not [e for e in evs if e["type"] in ("canary.promoted", "canary.paused")]
    assert len([e for e in evs if e["type"] == "canary.promoted_full"]) == 1
    canaries = canary_rows(st, deploy)
    assert len(canaries) == 3
    for row in canaries:  # one analysis per hold, successful: every check passed with data
        analysis = row["artifacts"]["analysis"]
        assert [a["status"] for a in analysis] == ["successful"], analysis
    at = [e["ts"].timestamp() for e in evs if e["type"] == "canary.weight"]
    assert at[1] - at[0] >= HOLD_S and at[2] - at[1] >= HOLD_S  # the holds were held


def test_proofile_faulty_canary_rolled_back_by_analysis(
    tm: Tm,
    pg_url: str,
    redis_url: str,  # noqa: F811 (the fixture imported above)
) -> None:
    """Phase 1 under constant user traffic (60 req/s): once nginx sends the canary its 5%, the
    test makes the canary process fail every request (`error_rate=1.0` through
    `tminus.testing.app`'s control endpoint). The analysis sees it in the real Prometheus
    data, its "Error rate < 0.5%" check fails, and without anyone deciding: all traffic goes
    back to stable in one router call, the phase's rollback runs (alert, all traffic to
    stable, wait until the error rate drops, communicate), the router is put back as it was
    and the deploy step's undo checks out the previous release. The deploy ends rolled_back
    with the failing check named; real requests through nginx after the restore all reach
    stable and succeed, and the only failed requests are the canary's, between the fault and
    the restore.

    Stand-ins (as in test_proofile_canary_promoted_by_analysis): the two app processes; phase
    1's `ssh` deploy and its undo run here as `run` steps (the undo's `git checkout
    prod-v1.0.0` is real, in the test's checkout; `docker-compose` is `exit 0`, so nothing is
    rebuilt or restarted: the faulty canary process keeps running, with no traffic); the
    exporter for CPU, memory and Web Vitals (LCP: page loads through nginx; failed loads are
    not recorded); `critical_issues` always 0; `error_logs` always 0 (the app logs nothing,
    and `docker-compose logs` is the stand-in); `npx` one `curl -f`. The notifications of the
    rollback (pager, Slack, e-mail, status page) are printed and recorded, not delivered.

    Reductions: `--phase` 1 only, `--skip-checklist`, the same `--var`, warm-up and 25 s
    memory baseline as the promotion test (the 2-day hold 4 s, the checks' interval 1 s, the
    rate windows 10 s); the plan's approval is given by the test. The fault is injected by the
    test, not shipped by the release, and only as errors (no latency, CPU or memory fault).

    Mutations: the canary step ignoring a failed analysis (`if verdict == "fail"` never
    taken, tminus/steps/canary.py): nginx stays at 95/5 and the test fails (tried). The
    step's artifacts as they were before this change (`**data` last, so `weight` said 5 after
    traffic went back to 0): `art["weight"] == 0` fails (tried; that was the engine bug).
    """
    r = Rehearsal(tm, pg_url, redis_url)
    with r.services():
        first = r.run(PHASE_1)
        assert first.returncode == 3, first.stdout + first.stderr  # the plan's approval
        deploy = tm.latest()["id"]
        tm("approve", deploy, "--role", "release_manager", "--as", "rehearsal", check=0)
        r.baseline()
        outcome: dict[str, subprocess.CompletedProcess[str]] = {}
        runner = threading.Thread(target=lambda: outcome.update(done=tm("resume", deploy)))
        runner.start()
        deadline = time.monotonic() + 90
        while weights(r.ngx) != {"stable": 95, "canary": 5}:  # the canary gets its 5%
            assert runner.is_alive() and time.monotonic() < deadline, outcome
            time.sleep(0.05)
        r.canary.set(error_rate=1.0)
        faulted = time.time()
        runner.join(150)
        done = outcome["done"]
        time.sleep(1.0)
        result = r.load.stop()
        assert weights(r.ngx) == {"stable": 100, "canary": 0}

    assert done.returncode == 1, done.stdout + done.stderr
    failing = "Error rate < 0.5% (slightly higher than staging)"
    info = tm.json("status", deploy)
    assert info["state"] == "rolled_back" and failing in info["reason"], info
    st = store(tm)  # one Store in this process, opened once nothing else writes
    (row,) = canary_rows(st, deploy)
    art = row["artifacts"]
    assert art["failed_at_weight"] == 5 and art["weight"] == 0
    assert art["analysis"]["status"] == "failed" and failing in art["analysis"]["message"]
    detected, restored = art["fault_detected_at"], art["traffic_restored_at"]
    assert faulted < detected < restored
    # every measurement had data; the one that failed is the error rate's
    states = {(m["check"], m["status"]) for m in art["measurements"]}
    assert {s for _, s in states} <= {"passed", "failed"}, states
    assert {c for c, s in states if s == "failed"} == {failing}, states
    # real requests: the canary's failures, only between the fault and the restore; after
    # it, every request reaches stable and succeeds
    failures = result.failures()
    assert failures and all(faulted - 0.05 < q.started < restored for q in failures)
    assert {q.status for q in failures} == {500}
    after = [q for q in result.requests if q.started > restored + 0.25]
    assert after and all(q.ok and q.body.strip() == "stable" for q in after)
    rows = st.step_rows(deploy)
    rolled = {r["title"]: r["state"] for k, r in rows.items() if k.startswith("rollback/")}
    assert set(rolled.values()) == {"succeeded"}, rolled
    assert "VERIFY: error rate drops" in rolled and len(rolled) >= 6, rolled
    head = subprocess.run(["git", "describe", "--tags", "--exact-match"], cwd=r.app_dir,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert head.stdout.strip() == "prod-v1.0.0"  # the deploy step's undo ran
    took = (detected - faulted, (restored - detected) * 1000)
    print("fault → detected %.2f s, traffic restored %.0f ms later" % took)  # noqa: UP031
