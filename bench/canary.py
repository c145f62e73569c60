"""Progressive delivery figures, side by side, from one run:

    uv run python bench/canary.py [--runs 5] [--routers haproxy,nginx] [--interval-ms 20]
                                  [--parts a,b,c] [--rps-c 10000] [--c-runs 3] [--json]

(a) **A hard-failing canary at 5% weight under 500 rps of user traffic**, through HAProxy and
    through nginx (runs interleaved). Real router in front of two real app processes;
    ``tminus run`` (a subprocess, as an operator runs it) holds a ``canary`` step at 5% with
    one analysis check every ``--interval-ms``: on HAProxy the canary server's 5xx share in
    HAProxy's own counters (``haproxy`` source: user traffic); on nginx, which has no
    per-server counters in its open-source build, the canary app probed directly (``http``
    source). Once the canary serves its 5%, the bench makes it fail every request and notes
    the time. Reported (median of ``--runs``): failed user requests, ms from the fault to the
    detection, to the traffic restored as the deploy recorded it (``traffic_restored_at``:
    on HAProxy when its runtime call was answered, before the router's config check and
    write that follow an urgent change; on nginx when the reload call returned, the new
    workers running), and on HAProxy to the moment the canary server was drained as seen on
    HAProxy's runtime API (polled every millisecond by a thread of the bench: an independent
    witness of the recorded time). Next to it, what Flagger's
    defaults allow at the same traffic: its analysis looks every ``interval`` (60 s) and
    rolls back after ``threshold`` (1) failed checks, so a fault just after a check fails
    every canary request until the next one:
    ``interval × threshold × rps × weight = 60 × 1 × 500 × 5% = 1500`` requests at worst
    (750 on average), before Flagger's own rollback time.
(b) **Sequential analysis against fixed windows**: ``bench/canary_sequential.py``'s table
    (``run_part_b``), imported.
(c) **20 blue↔green switches at 10,000 rps** (``--rps-c``), through nginx (upstream
    keep-alive on, two workers) and HAProxy, driven by wrk (``bench/canary_wrk.py``, which
    says what wrk counts as failed and as sent again): ``tminus run`` of a plan of 20
    ``blue_green`` steps (each switches the pools, in one router call), 250 ms apart, against
    the same plan with the switches left out (same waits, same tminus process), each pair run
    side by side ``--c-runs`` times. The app versions are ``NginxApp`` stand-ins (nginx
    answering ``200 blue``/``200 green``): the Python app serves a few thousand requests per
    second at most.

Figures are printed, not asserted; the exit status is non-zero only if a run breaks. Part
(a)'s load generator (``tminus.testing.load``) runs in this process; on a small shared machine
its own scheduling adds to the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from canary_wrk import part_c, print_c, store_of, tminus_run  # bench/canary_wrk.py

from tminus.testing.app import AppProcess
from tminus.testing.haproxy import HaproxyServer
from tminus.testing.load import LoadResult, constant_rate
from tminus.testing.nginx import NginxServer

WEIGHT = 5
RPS_A = 500
RPS_C = 10_000
FLAGGER_INTERVAL_S = 60.0
FLAGGER_THRESHOLD = 1


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


def _canary_plan(
    router: dict[str, Any], check: dict[str, Any], interval_ms: float
) -> dict[str, Any]:
    return {
        "tminus": 1,
        "name": "bench-canary",
        "targets": {"routers": {"lb": router}},
        "checks": {
            "canary_5xx": {
                **check,
                "interval": f"{interval_ms:g}ms",
                # a window without a canary request says nothing either way
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


def _haproxy_check() -> dict[str, Any]:
    """The canary server's 5xx share in HAProxy's own counters (user traffic)."""
    return {
        "name": "Canary 5xx share (HAProxy)",
        "source": "haproxy",
        "router": "lb",
        "server": "canary1",
        "metric": "5xx_rate",
        "expect": "<= 50%",
        "critical": "> 50%",
    }


def _http_check(canary: AppProcess) -> dict[str, Any]:
    """nginx (open source) has no per-server counters to read: the canary itself, probed."""
    return {
        "name": "Canary answers (probed)",
        "source": "http",
        "url": canary.url + "/",
        "timeout": "1s",
    }


def _stable_only_at(hap: HaproxyServer, t0: float, stop: threading.Event) -> list[float]:
    """Poll HAProxy's weights (runtime API, every ~1 ms, in a thread) from ``t0`` until the
    canary server is drained: when the traffic was back on stable, seen from HAProxy."""
    seen: list[float] = []
    while not stop.is_set():
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(hap.socket))
            sock.sendall(f"show servers state {hap.backend}\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        now = time.time()
        for line in data.decode().splitlines():
            fields = line.split()
            # srv_admin_state: drain (0x18) or maintenance (0x23)
            if len(fields) > 6 and fields[3] == "canary1" and int(fields[6]) & 0x3B:
                seen.append(now)
                return seen
        time.sleep(0.001)
    return seen


async def _one_failing_canary(
    stable: AppProcess,
    canary: AppProcess,
    rps: float,
    workdir: Path,
    kind: str,
    interval_ms: float,
) -> dict[str, Any]:
    stable.set(error_rate=0.0)
    canary.set(error_rate=0.0)
    pools = {"stable": [stable.address], "canary": [canary.address]}
    front: HaproxyServer | NginxServer = (
        HaproxyServer(pools) if kind == "haproxy" else NginxServer(pools)
    )
    with front:
        check = _haproxy_check() if kind == "haproxy" else _http_check(canary)
        plan = _canary_plan(front.router_config(), check, interval_ms)
        (workdir / "plan.yaml").write_text(json.dumps(plan, indent=1))
        stop = asyncio.Event()
        load = asyncio.create_task(constant_rate(front.url, rps=rps, duration=300, stop=stop))
        run = asyncio.create_task(tminus_run(workdir, "run", "plan.yaml"))
        deadline = time.monotonic() + 60
        while not _weight_reached(workdir):  # until the canary holds its weight
            if run.done():
                raise RuntimeError(f"tminus ended early: {run.result()[1][-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the canary never reached its weight")
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # the canary serves its share, healthy
        poll_stop = threading.Event()
        t_fault = time.time()
        poller = (
            asyncio.create_task(asyncio.to_thread(_stable_only_at, front, t_fault, poll_stop))
            if isinstance(front, HaproxyServer)
            else None
        )
        await asyncio.to_thread(canary.set, error_rate=1.0)
        try:
            code, out = await asyncio.wait_for(asyncio.shield(run), 120)
        except TimeoutError:
            raise RuntimeError("tminus did not end within 120 s of the fault") from None
        finally:
            poll_stop.set()
        seen = await poller if poller is not None else []
        await asyncio.sleep(1.0)
        stop.set()
        result: LoadResult = await load
        canary.set(error_rate=0.0)
        if code != 1:
            raise RuntimeError(f"expected a rollback (exit 1), got {code}: {out[-2000:]}")
        art = store_of(workdir).step_rows("bench-canary-1")["phase/0/step/0"]["artifacts"]
        detected, restored = art["fault_detected_at"], art["traffic_restored_at"]
        after = [r for r in result.requests if r.started > restored + 0.05]
        return {
            "requests": result.total,
            "failed": result.failed,
            "failed_after_restore": sum(1 for r in after if not r.ok),
            "failed_by_status": {
                str(k): n for k, n in Counter(r.status for r in result.failures()).items()
            },
            "failed_before_fault": sum(1 for r in result.failures() if r.started < t_fault),
            "detect_ms": (detected - t_fault) * 1000,
            "restore_ms": (restored - t_fault) * 1000,
            "router_call_ms": (restored - detected) * 1000,
            # HAProxy: when the canary was drained, seen on HAProxy's runtime API
            "observed_ms": (seen[0] - t_fault) * 1000 if seen else None,
            "load": os.getloadavg()[0],
        }


async def part_a(runs: int, rps: float, routers: list[str], interval_ms: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rps": rps,
        "weight_percent": WEIGHT,
        "interval_ms": interval_ms,
        "routers": {},
    }
    canary_rps = rps * WEIGHT / 100
    flagger_worst = FLAGGER_INTERVAL_S * FLAGGER_THRESHOLD * canary_rps
    out["flagger"] = {
        "interval_s": FLAGGER_INTERVAL_S,
        "threshold": FLAGGER_THRESHOLD,
        "worst_failed": flagger_worst,
        "average_failed": flagger_worst / 2,
        "worst_restore_ms": FLAGGER_INTERVAL_S * FLAGGER_THRESHOLD * 1000,
    }
    with AppProcess("stable") as stable, AppProcess("canary") as canary:
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in routers}
        for i in range(runs):  # the routers interleaved, run by run
            for kind in routers:
                with tempfile.TemporaryDirectory(prefix="tminus-bench-canary-") as tmp:
                    row = await _one_failing_canary(
                        stable, canary, rps, Path(tmp), kind, interval_ms
                    )
                seen = row["observed_ms"]
                print(
                    f"  (a) {kind} run {i + 1}: {row['failed']} failed of {row['requests']}, "
                    f"fault → detected {row['detect_ms']:.0f} ms → traffic restored (recorded) "
                    f"{row['restore_ms']:.0f} ms"
                    + (f" (drained on HAProxy at {seen:.0f} ms)" if seen is not None else "")
                    + f", load {row['load']:.1f}"
                    + (f"; failed by status {row['failed_by_status']}" if row["failed"] else ""),
                    file=sys.stderr,
                )
                rows[kind].append(row)
    for kind, kind_rows in rows.items():
        keys = ["failed", "detect_ms", "restore_ms", "router_call_ms"]
        if all(r["observed_ms"] is not None for r in kind_rows):
            keys.append("observed_ms")
        out["routers"][kind] = {
            "runs": kind_rows,
            "median": {k: statistics.median(r[k] for r in kind_rows) for k in keys},
        }
    out["targets"] = {
        "failed": 2,
        "restore_ms": {"haproxy": 50, "nginx": 150},
    }
    return out


# --- output ---------------------------------------------------------------------------------


def print_a(a: dict[str, Any]) -> None:
    f = a["flagger"]
    print(
        f"Part (a): hard-failing canary at {a['weight_percent']}% of {a['rps']:g} rps "
        f"({a['rps'] * a['weight_percent'] / 100:g} rps to the canary), analysis every "
        f"{a['interval_ms']:g} ms, median of {len(next(iter(a['routers'].values()))['runs'])}"
    )
    head = f"{'':<40} " + " ".join(f"{k:>10}" for k in a["routers"]) + f" {'Flagger':>10}"
    print(head)
    print("-" * len(head))

    def row(label: str, key: str, flagger: str = "") -> None:
        cells = []
        for r in a["routers"].values():
            v = r["median"].get(key)
            cells.append(f"{v:>10.0f}" if v is not None else f"{'':>10}")
        print(f"{label:<40} " + " ".join(cells) + f" {flagger:>10}")

    row("failed user requests (target ≤ 2)", "failed", f"≤ {f['worst_failed']:.0f}")
    row("fault → traffic restored, recorded (ms)", "restore_ms", f"≤ {f['worst_restore_ms']:.0f}")
    row("fault → drained, seen on HAProxy (ms)", "observed_ms")
    row("  of which fault → detected (ms)", "detect_ms")
    row("  of which the router call (ms)", "router_call_ms")
    print("targets: fault → traffic restored ≤ 50 ms (HAProxy), ≤ 150 ms (nginx)")
    for kind, r in a["routers"].items():
        print(
            f"{kind} runs: "
            + "; ".join(
                f"{x['failed']} failed, {x['restore_ms']:.0f} ms"
                + (f" (drained {x['observed_ms']:.0f})" if x["observed_ms"] is not None else "")
                + f", load {x['load']:.1f}"
                for x in r["runs"]
            )
        )


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "load": os.getloadavg()},
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    parts = set(args.parts.split(","))
    if "a" in parts:
        figures["a"] = await part_a(
            args.runs, args.rps_a, args.routers.split(","), args.interval_ms
        )
    if "b" in parts:
        try:
            from canary_sequential import run_part_b  # bench/canary_sequential.py
        except ImportError as exc:
            figures["b"] = {"missing": str(exc)}
        else:
            figures["b"] = await asyncio.to_thread(run_part_b, seed=1, runs=args.b_runs)
    if "c" in parts:
        figures["c"] = await part_c(
            args.switches,
            args.rps_c,
            args.c_seconds,
            args.c_connections,
            args.c_runs,
            tuple(args.c_routers.split(",")),
            args.c_haproxy_reuse,
        )
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=5, help="failing-canary runs (median)")
    ap.add_argument("--routers", default="haproxy,nginx", help="part (a)'s routers")
    ap.add_argument("--interval-ms", type=float, default=20, help="part (a)'s analysis interval")
    ap.add_argument("--rps-a", type=float, default=RPS_A)
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--rps-c", type=float, default=RPS_C)
    ap.add_argument("--c-seconds", type=float, default=15, help="each wrk run's length")
    ap.add_argument("--c-connections", type=int, default=100)
    ap.add_argument("--c-runs", type=int, default=3, help="side-by-side runs per router")
    ap.add_argument("--c-routers", default="nginx,haproxy", help="part (c)'s routers")
    ap.add_argument(
        "--c-haproxy-reuse",
        default=None,
        help="part (c)'s HAProxy 'http-reuse' (default: HAProxy's own, safe), e.g. always",
    )
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
