"""Progressive delivery figures, side by side, from one run:

    uv run python bench/canary.py [--runs 3] [--switches 20] [--parts a,b,c] [--json]

(a) **A hard-failing canary at 5% weight under 500 rps of user traffic.** Real HAProxy in
    front of two real app processes; ``tminus run`` (a subprocess, as an operator runs it)
    holds a ``canary`` step at 5% with an ``haproxy`` analysis check on the canary server
    (5xx share, every 100 ms). Once the canary serves its 5%, the bench makes it fail every
    request and notes the time. Reported (median of ``--runs``): failed user requests, ms
    from the fault to the detection, and from the fault to the router call that sent all
    traffic back to stable having returned (the deploy's ``traffic_restored_at``). Next to
    it, what Flagger's defaults allow at the same traffic: its analysis looks every
    ``interval`` (60 s) and rolls back after ``threshold`` (1) failed checks, so a fault just
    after a check fails every canary request until the next one:
    ``interval × threshold × rps × weight = 60 × 1 × 500 × 5% = 1500`` requests at worst
    (750 on average), before Flagger's own rollback time.
(b) **Sequential analysis against fixed windows**: ``bench/canary_sequential.py``'s table
    (``run_part_b``), imported.
(c) **20 blue↔green switches at 1000 rps**, through nginx and through HAProxy: ``tminus run``
    of a plan of 20 ``blue_green`` steps (each switches the pools, in one router call),
    250 ms apart, against the same plan with the switches left out (same waits, same tminus
    process), under the same load. Reported: requests, failed requests, p50 and p99 latency.
    nginx is measured twice: as configured by default (``keepalive_timeout 75s``) and with
    ``keepalive_timeout 0`` (a new connection per request). A reload retires nginx's old
    workers, which close their idle keep-alive connections; the load generator, like browsers
    and urllib3, sends a request again on a new connection when a reused one was closed before
    any byte of the answer (the request was never processed), so such a request is not failed.

Figures are printed, not asserted; the exit status is non-zero only if a run breaks. The load
generator (``tminus.testing.load``) runs in this process; on a small shared machine its own
scheduling adds to the latencies, equally in the switching and the baseline runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tminus.store.store import Store
from tminus.testing.app import AppProcess
from tminus.testing.haproxy import HaproxyServer
from tminus.testing.load import LoadResult, constant_rate
from tminus.testing.nginx import NginxServer

WEIGHT = 5
RPS_A = 500
RPS_C = 1000
FLAGGER_INTERVAL_S = 60.0
FLAGGER_THRESHOLD = 1


async def _tminus(cwd: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "TMINUS_OPERATOR": "bench"}
    env.pop("TMINUS_STATE", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tminus",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def _store(cwd: Path) -> Store:
    return Store(f"sqlite:///{cwd / '.tminus' / 'state.db'}")


# --- (a) a failing canary -------------------------------------------------------------------


def _weight_reached(workdir: Path) -> bool:
    """Has the running deploy recorded its canary weight? (Read-only: tminus owns the store.)"""
    db = workdir / ".tminus" / "state.db"
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute(
                "SELECT count(*) FROM events WHERE type = 'canary.weight'"
            ).fetchone()
    except sqlite3.Error:  # the schema is being created
        return False
    return bool(row and row[0])


def _canary_plan(hap: HaproxyServer) -> dict[str, Any]:
    return {
        "tminus": 1,
        "name": "bench-canary",
        "targets": {"routers": {"lb": hap.router_config()}},
        "checks": {
            "canary_5xx": {
                "name": "Canary 5xx share (HAProxy)",
                "source": "haproxy",
                "router": "lb",
                "server": "canary1",
                "metric": "5xx_rate",
                "interval": "100ms",
                "expect": "<= 50%",
                "critical": "> 50%",
                # a 100 ms window without a canary request says nothing either way
                "inconclusive_limit": 1000000,
            }
        },
        "phases": [
            {
                "name": "Canary",
                "steps": [
                    {
                        "kind": "canary",
                        "router": "lb",
                        "stable": "stable",
                        "canary": "canary",
                        "steps": [{"weight": WEIGHT, "pause": "60s"}],
                        "analysis": ["canary_5xx"],
                    }
                ],
            }
        ],
    }


async def _one_failing_canary(
    stable: AppProcess, canary: AppProcess, rps: float, workdir: Path
) -> dict[str, Any]:
    stable.set(error_rate=0.0)
    canary.set(error_rate=0.0)
    with HaproxyServer({"stable": [stable.address], "canary": [canary.address]}) as hap:
        (workdir / "plan.yaml").write_text(json.dumps(_canary_plan(hap), indent=1))
        stop = asyncio.Event()
        load = asyncio.create_task(constant_rate(hap.url, rps=rps, duration=300, stop=stop))
        run = asyncio.create_task(_tminus(workdir, "run", "plan.yaml"))
        deadline = time.monotonic() + 30
        while not _weight_reached(workdir):  # until the canary holds its weight
            if run.done():
                raise RuntimeError(f"tminus ended early: {run.result()[1][-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the canary never reached its weight")
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # the canary serves its share, healthy
        t_fault = time.time()
        await asyncio.to_thread(canary.set, error_rate=1.0)
        code, out = await asyncio.wait_for(run, 120)
        await asyncio.sleep(1.0)
        stop.set()
        result: LoadResult = await load
        canary.set(error_rate=0.0)
        if code != 1:
            raise RuntimeError(f"expected a rollback (exit 1), got {code}: {out[-2000:]}")
        art = _store(workdir).step_rows("bench-canary-1")["phase/0/step/0"]["artifacts"]
        detected, restored = art["fault_detected_at"], art["traffic_restored_at"]
        after = [r for r in result.requests if r.started > restored + 0.05]
        return {
            "requests": result.total,
            "failed": result.failed,
            "failed_after_restore": sum(1 for r in after if not r.ok),
            "detect_ms": (detected - t_fault) * 1000,
            "restore_ms": (restored - t_fault) * 1000,
            "router_call_ms": (restored - detected) * 1000,
        }


async def part_a(runs: int, rps: float) -> dict[str, Any]:
    rows = []
    with AppProcess("stable") as stable, AppProcess("canary") as canary:
        for i in range(runs):
            with tempfile.TemporaryDirectory(prefix="tminus-bench-canary-") as tmp:
                row = await _one_failing_canary(stable, canary, rps, Path(tmp))
            print(
                f"  (a) run {i + 1}: {row['failed']} failed of {row['requests']}, fault → "
                f"detected {row['detect_ms']:.0f} ms → restored {row['restore_ms']:.0f} ms",
                file=sys.stderr,
            )
            rows.append(row)
    canary_rps = rps * WEIGHT / 100
    flagger_worst = FLAGGER_INTERVAL_S * FLAGGER_THRESHOLD * canary_rps
    return {
        "rps": rps,
        "weight_percent": WEIGHT,
        "runs": rows,
        "median": {
            k: statistics.median(r[k] for r in rows)
            for k in ("failed", "detect_ms", "restore_ms", "router_call_ms")
        },
        "flagger": {
            "interval_s": FLAGGER_INTERVAL_S,
            "threshold": FLAGGER_THRESHOLD,
            "worst_failed": flagger_worst,
            "average_failed": flagger_worst / 2,
            "worst_restore_ms": FLAGGER_INTERVAL_S * FLAGGER_THRESHOLD * 1000,
        },
        "targets": {"restore_ms": 1000, "failed": 20},
    }


# --- (c) blue-green switches ----------------------------------------------------------------


def _switch_plan(router: dict[str, Any], switches: int, switching: bool) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    pools = ["blue", "green"]
    for i in range(switches):
        active, idle = pools[i % 2], pools[(i + 1) % 2]
        if switching:
            steps.append(
                {
                    "kind": "blue_green",
                    "name": f"Switch {i + 1}: {active} → {idle}",
                    "router": "lb",
                    "active": active,
                    "idle": idle,
                }
            )
        steps.append({"kind": "wait", "name": f"Serve {i + 1}", "duration": "250ms"})
    return {
        "tminus": 1,
        "name": "bench-switch",
        "targets": {"routers": {"lb": router}},
        "phases": [{"name": "Switches", "steps": steps}],
    }


def _time_wait() -> int:
    """Sockets in TIME_WAIT on this machine (/proc/net/tcp*, state 06)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                n += sum(1 for line in fh if line.split()[3:4] == ["06"])
        except OSError:
            pass
    return n


async def _quiet_ports(limit: int = 1000, wait: float = 65.0) -> int:
    """Wait (up to ``wait`` s) until fewer than ``limit`` sockets are in TIME_WAIT: at 1000 rps
    nginx opens a new upstream connection per request, and leftovers of the previous run
    (60 s each) would slow the next run's connects."""
    deadline = time.monotonic() + wait
    while (n := _time_wait()) >= limit and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
    return n


async def _switch_run(
    front: NginxServer | HaproxyServer, switches: int, switching: bool, rps: float
) -> dict[str, Any]:
    time_wait = await _quiet_ports()
    with tempfile.TemporaryDirectory(prefix="tminus-bench-switch-") as tmp:
        workdir = Path(tmp)
        plan = _switch_plan(front.router_config(), switches, switching)
        (workdir / "plan.yaml").write_text(json.dumps(plan, indent=1))
        stop = asyncio.Event()
        load = asyncio.create_task(constant_rate(front.url, rps=rps, duration=300, stop=stop))
        await asyncio.sleep(1.0)
        t0 = time.time()
        code, out = await _tminus(workdir, "run", "plan.yaml")
        t1 = time.time()
        await asyncio.sleep(0.5)
        stop.set()
        result = await load
        if code != 0:
            raise RuntimeError(f"switch plan failed ({code}): {out[-2000:]}")
        if switching:
            events = _store(workdir).events("bench-switch-1")
            done = sum(1 for e in events if e["type"] == "blue_green.switched")
            if done != switches:
                raise RuntimeError(f"{done} switches recorded, not {switches}")
    during = [r for r in result.requests if t0 <= r.started <= t1]
    achieved = len(during) / (t1 - t0) if t1 > t0 else 0.0
    return {
        "requests": result.total,
        "failed": result.failed,
        "achieved_rps": achieved,
        "p50_ms": result.percentile(50) * 1000,
        "p99_ms": result.percentile(99) * 1000,
        "versions": dict(result.by_body),
        "time_wait_at_start": time_wait,
    }


async def part_c(switches: int, rps: float) -> dict[str, Any]:
    out: dict[str, Any] = {"switches": switches, "rps": rps, "routers": {}}
    with AppProcess("blue") as blue, AppProcess("green") as green:
        pools = {"blue": [blue.address], "green": [green.address]}
        fronts: list[tuple[str, Any]] = [
            ("nginx (keepalive 75s)", lambda: NginxServer(pools)),
            ("nginx (keepalive 0)", lambda: NginxServer(pools, keepalive_timeout="0")),
            ("haproxy", lambda: HaproxyServer(pools)),
        ]
        for name, make in fronts:
            rows = {}
            for switching in (False, True):
                with ExitStack() as stack:
                    front = stack.enter_context(make())
                    row = await _switch_run(front, switches, switching, rps)
                rows["switching" if switching else "baseline"] = row
                print(
                    f"  (c) {name}, {'switching' if switching else 'baseline'}: "
                    f"{row['failed']} failed of {row['requests']}, p99 {row['p99_ms']:.1f} ms",
                    file=sys.stderr,
                )
            out["routers"][name] = rows
    return out


# --- output ---------------------------------------------------------------------------------


def print_a(a: dict[str, Any]) -> None:
    m, f = a["median"], a["flagger"]
    print(
        f"Part (a): hard-failing canary at {a['weight_percent']}% of {a['rps']:g} rps "
        f"({a['rps'] * a['weight_percent'] / 100:g} rps to the canary), HAProxy, "
        f"median of {len(a['runs'])}"
    )
    head = f"{'':<34} {'tminus':>12} {'Flagger defaults':>18} {'target':>8}"
    print(head)
    print("-" * len(head))
    print(
        f"{'failed user requests':<34} {m['failed']:>12.0f} "
        f"{'≤ ' + format(f['worst_failed'], '.0f'):>18} {'≤ 20':>8}"
    )
    print(
        f"{'fault → traffic restored (ms)':<34} {m['restore_ms']:>12.0f} "
        f"{'≤ ' + format(f['worst_restore_ms'], '.0f'):>18} {'< 1000':>8}"
    )
    print(f"{'  of which fault → detected (ms)':<34} {m['detect_ms']:>12.0f}")
    print(f"{'  of which the router call (ms)':<34} {m['router_call_ms']:>12.1f}")
    print(
        f"(Flagger: interval {f['interval_s']:.0f} s × threshold {f['threshold']} × "
        f"{a['rps'] * a['weight_percent'] / 100:g} canary rps = {f['worst_failed']:.0f} failed "
        f"at worst, {f['average_failed']:.0f} on average, plus its rollback time)"
    )
    print(
        "runs: " + "; ".join(f"{r['failed']} failed, {r['restore_ms']:.0f} ms" for r in a["runs"])
    )


def print_c(c: dict[str, Any]) -> None:
    print(f"Part (c): {c['switches']} blue↔green switches at {c['rps']:g} rps (tminus run)")
    head = (
        f"{'router':<24} {'run':<10} {'requests':>9} {'rps':>7} {'failed':>7} "
        f"{'p50 ms':>8} {'p99 ms':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, rows in c["routers"].items():
        for run in ("baseline", "switching"):
            r = rows[run]
            print(
                f"{name:<24} {run:<10} {r['requests']:>9} {r['achieved_rps']:>7.0f} "
                f"{r['failed']:>7} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
            )


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "load": os.getloadavg()},
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    parts = set(args.parts.split(","))
    if "a" in parts:
        figures["a"] = await part_a(args.runs, args.rps_a)
    if "b" in parts:
        try:
            from canary_sequential import run_part_b  # bench/canary_sequential.py
        except ImportError as exc:
            figures["b"] = {"missing": str(exc)}
        else:
            figures["b"] = await asyncio.to_thread(run_part_b, seed=1, runs=args.b_runs)
    if "c" in parts:
        figures["c"] = await part_c(args.switches, args.rps_c)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=3, help="failing-canary runs (median)")
    ap.add_argument("--rps-a", type=float, default=RPS_A)
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--rps-c", type=float, default=RPS_C)
    ap.add_argument("--parts", default="a,b,c", help="which parts to run, e.g. a,c")
    ap.add_argument("--b-runs", type=int, default=200)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    figures = asyncio.run(amain(args))
    if args.json:
        print(json.dumps(figures, indent=2, default=str))
        return
    print(
        f"{figures['when']}, {figures['machine']['cores']} cores, load "
        + " ".join(f"{x:.2f}" for x in figures["machine"]["load"])
    )
    if "a" in figures:
        print()
        print_a(figures["a"])
    if "b" in figures:
        print()
        if "missing" in figures["b"]:
            print(f"Part (b): bench/canary_sequential.py unavailable: {figures['b']['missing']}")
        else:
            from canary_sequential import print_table

            print_table(figures["b"])
    if "c" in figures:
        print()
        print_c(figures["c"])


if __name__ == "__main__":
    main()
