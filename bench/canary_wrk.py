"""Part (c) of ``bench/canary.py`` (and the helpers part (a) shares), at rates the Python
load generator cannot drive: wrk (Debian package ``wrk``) against nginx and HAProxy in front
of two stand-in app versions (``tminus.testing.nginx.NginxApp``: nginx answering
``200 <version>``), while ``tminus run`` switches blue↔green.

wrk is a closed-loop generator: ``connections`` connections, each sending its next request
when the previous one is answered. A Lua ``delay()`` of ``connections / rate`` seconds between
a connection's requests holds the offered rate near ``rate`` (a little under it: the answer's
own latency adds to each connection's cycle); the achieved rate is reported. wrk's latency is
from a request's write to its answer.

What wrk counts, and how it is reported here:

- **failed**: answers with a status ≥ 400, timeouts (no answer within wrk's 2 s) and connect
  errors: a user would see these;
- **resent**: read and write errors. wrk meets them when the server closed a connection it had
  reused (an nginx reload retires its old workers, which close their *idle* client keep-alive
  connections); wrk then opens a new connection and sends the request on it (``wrk.c``:
  ``reconnect_socket``), as browsers, curl and urllib3 do for a request that got no byte of an
  answer. They are shown apart, never hidden. HAProxy changes weights without a reload, so it
  has none.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tminus.store.store import Store
from tminus.testing.haproxy import HaproxyServer
from tminus.testing.nginx import NginxApp, NginxServer

__all__ = ["WRK_SCRIPT", "find_wrk", "part_c", "print_c", "run_wrk", "store_of", "tminus_run"]

WRK_SCRIPT = """
local rate_delay = tonumber(os.getenv("TMINUS_WRK_DELAY_MS") or "0")
function delay()
  return rate_delay
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'TMINUS_WRK {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, '
    .. '"p999_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError(
            "wrk is not installed: apt-get install wrk (scripts/test-services.sh installs it)"
        )
    return path


async def run_wrk(
    url: str, *, rate: float, seconds: float, connections: int = 100, threads: int = 2
) -> dict[str, Any]:
    """wrk against ``url`` at about ``rate`` requests per second for ``seconds``: the figures
    of its ``done()`` (see the module docstring for what counts as failed)."""
    with tempfile.TemporaryDirectory(prefix="tminus-wrk-") as tmp:
        script = Path(tmp) / "rate.lua"
        script.write_text(WRK_SCRIPT)
        delay_ms = max(0, round(connections / rate * 1000)) if rate > 0 else 0
        proc = await asyncio.create_subprocess_exec(
            find_wrk(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "2s",
            "-s",
            str(script),
            url + "/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={"TMINUS_WRK_DELAY_MS": str(delay_ms), "PATH": "/usr/bin:/bin"},
        )
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("TMINUS_WRK ")), None)
    if line is None or proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {text[-1500:]}")
    raw = json.loads(line.removeprefix("TMINUS_WRK "))
    secs = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "achieved_rps": raw["requests"] / secs if secs else 0.0,
        "failed": raw["status"] + raw["timeout"] + raw["connect"],
        "resent": raw["read"] + raw["write"],
        "errors": {k: raw[k] for k in ("connect", "read", "write", "status", "timeout")},
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "p999_ms": raw["p999_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "delay_ms": delay_ms,
        "connections": connections,
    }


async def tminus_run(cwd: Path, *args: str) -> tuple[int, str]:
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


def store_of(cwd: Path) -> Store:
    return Store(f"sqlite:///{cwd / '.tminus' / 'state.db'}")


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


async def _switch_run(
    front: NginxServer | HaproxyServer,
    switches: int,
    switching: bool,
    rps: float,
    seconds: float,
    connections: int,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tminus-bench-switch-") as tmp:
        workdir = Path(tmp)
        plan = _switch_plan(front.router_config(), switches, switching)
        (workdir / "plan.yaml").write_text(json.dumps(plan, indent=1))
        load = asyncio.create_task(
            run_wrk(front.url, rate=rps, seconds=seconds, connections=connections)
        )
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        code, out = await tminus_run(workdir, "run", "plan.yaml")
        took = time.monotonic() - t0
        loadavg = os.getloadavg()[0]
        if load.done():
            raise RuntimeError(f"wrk ended before tminus ({took:.1f} s): raise --c-seconds")
        result = await load
        if code != 0:
            raise RuntimeError(f"switch plan failed ({code}): {out[-2000:]}")
        if switching:
            events = store_of(workdir).events("bench-switch-1")
            done = sum(1 for e in events if e["type"] == "blue_green.switched")
            if done != switches:
                raise RuntimeError(f"{done} switches recorded, not {switches}")
    return {**result, "tminus_s": took, "load": loadavg}


async def part_c(
    switches: int,
    rps: float,
    seconds: float,
    connections: int,
    runs: int,
    routers: tuple[str, ...] = ("nginx", "haproxy"),
    haproxy_reuse: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "switches": switches,
        "rps": rps,
        "seconds": seconds,
        "connections": connections,
        "haproxy_reuse": haproxy_reuse or "safe (HAProxy's default)",
        "routers": {},
    }
    with NginxApp("blue") as blue, NginxApp("green") as green:
        pools = {"blue": [blue.address], "green": [green.address]}
        fronts: list[tuple[str, Any]] = [
            ("nginx", lambda: NginxServer(pools, workers=2)),
            ("haproxy", lambda: HaproxyServer(pools, http_reuse=haproxy_reuse)),
        ]
        for name, make in fronts:
            if name not in routers:
                continue
            rows: dict[str, list[dict[str, Any]]] = {"baseline": [], "switching": []}
            for _ in range(runs):
                for switching in (False, True):  # side by side
                    with make() as front:
                        row = await _switch_run(
                            front, switches, switching, rps, seconds, connections
                        )
                    kind = "switching" if switching else "baseline"
                    rows[kind].append(row)
                    print(
                        f"  (c) {name}, {kind}: {row['failed']} failed, {row['resent']} "
                        f"resent of {row['requests']} ({row['achieved_rps']:.0f} rps), "
                        f"p99 {row['p99_ms']:.2f} ms, load {row['load']:.1f}",
                        file=sys.stderr,
                    )
            out["routers"][name] = {
                kind: {
                    "runs": kind_rows,
                    "median": {
                        k: statistics.median(r[k] for r in kind_rows)
                        for k in ("achieved_rps", "p50_ms", "p99_ms", "load")
                    },
                    "failed": sum(r["failed"] for r in kind_rows),
                    "resent": sum(r["resent"] for r in kind_rows),
                    "requests": sum(r["requests"] for r in kind_rows),
                }
                for kind, kind_rows in rows.items()
            }
    return out


def print_c(c: dict[str, Any]) -> None:
    print(
        f"Part (c): {c['switches']} blue↔green switches (tminus run) under wrk at "
        f"{c['rps']:g} rps offered, {c['connections']} connections, HAProxy http-reuse "
        f"{c['haproxy_reuse']}; medians of "
        f"{len(next(iter(c['routers'].values()))['baseline']['runs'])} side-by-side run(s)"
    )
    head = (
        f"{'router':<9} {'run':<10} {'requests':>9} {'rps':>7} {'failed':>7} {'resent':>7} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'load':>6}"
    )
    print(head)
    print("-" * len(head))
    for name, rows in c["routers"].items():
        for run in ("baseline", "switching"):
            r = rows[run]
            m = r["median"]
            print(
                f"{name:<9} {run:<10} {r['requests']:>9} {m['achieved_rps']:>7.0f} "
                f"{r['failed']:>7} {r['resent']:>7} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} "
                f"{m['load']:>6.1f}"
            )
        ratio = rows["switching"]["median"]["p99_ms"] / rows["baseline"]["median"]["p99_ms"]
        pairs = [
            s["p99_ms"] / b["p99_ms"]
            for b, s in zip(rows["baseline"]["runs"], rows["switching"]["runs"], strict=True)
        ]
        print(
            f"{'':<9} p99 switching / baseline: {ratio:.2f} (target ≤ 1.2); side-by-side "
            f"pairs: {', '.join(f'{x:.2f}' for x in pairs)} (median {statistics.median(pairs):.2f})"
        )
