"""Engine overhead per step: a plan of N no-op ``run`` steps through the durable engine,
against the same N commands run raw, the way the local host runs them.

    uv run python bench/engine_overhead.py [--steps 1000] [--repeat 3] [--no-postgres]

Per repeat, each store gets a raw run immediately followed by an engine run (the store's
order rotates between repeats), so machine noise hits baseline and engine alike; the table
reports medians. A 3-step warm-up run per store comes first, off the clock. The schema of
each fresh store is created before the clock starts; the plan load and validation, the lock
and every state write are inside the timed engine run.

Figures are printed, not asserted: the exit status is non-zero only if a run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

#: Issue #20 item 4: engine overhead per step, by store (ms).
TARGET_MS_PER_STEP = {"sqlite": 0.5, "postgres": 2.0}
DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def write_plan(path: Path, steps: int) -> None:
    lines = [
        "name: bench",
        "environment: bench",
        "phases:",
        "  - name: all",
        "    on_failure: pause",
        "    steps:",
    ]
    lines += [f'      - {{kind: run, name: s{i}, command: "true"}}' for i in range(steps)]
    path.write_text("\n".join(lines) + "\n")


def check_plan(path: Path) -> None:
    """``tminus check`` on the generated plan (warnings are fine, errors are not)."""
    proc = subprocess.run(
        [sys.executable, "-c", "from tminus.cli.app import main; main()", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise RuntimeError(f"tminus check rejected the generated plan:\n{out}")
    print(f"tminus check: {out.splitlines()[-1] if out else 'ok'}")


# --- baseline ------------------------------------------------------------------------------
async def _raw(n: int) -> None:
    """What LocalHost.run does for a string command, minus the engine around it."""
    shell = "/bin/bash" if os.path.exists("/bin/bash") else None
    for _ in range(n):
        proc = await asyncio.create_subprocess_shell(
            "true",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(os.environ),
            start_new_session=True,
            executable=shell,
        )
        assert proc.stdout is not None and proc.stderr is not None
        await asyncio.gather(proc.stdout.read(), proc.stderr.read())
        status = await proc.wait()
        if status != 0:
            raise RuntimeError(f"raw 'true' exited {status}")


def time_raw(n: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for n raw commands."""
    t0, c0 = time.perf_counter(), time.process_time()
    asyncio.run(_raw(n))
    return time.perf_counter() - t0, time.process_time() - c0


# --- engine --------------------------------------------------------------------------------
def time_engine(plan: Path, state_url: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one engine run of ``plan``."""
    from tminus.engine.runner import RunOptions, start
    from tminus.store.store import Store

    Store(state_url).close()  # create the schema outside the timed run
    t0, c0 = time.perf_counter(), time.process_time()
    _deploy_id, code, message = start(
        str(plan), RunOptions(state_url=state_url, operator="bench", quiet=True)
    )
    elapsed = time.perf_counter() - t0, time.process_time() - c0
    if code != 0:
        raise RuntimeError(f"engine run failed (exit {code}): {message}")
    return elapsed


class Postgres:
    """Fresh databases on the server of ``admin_url``, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def _exec(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def fresh(self, tag: str) -> str:
        name = f"tminus_bench_{os.getpid()}_{tag}"
        self._exec(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.admin_url.rsplit("/", 1)[0] + "/" + name

    def drop_all(self) -> None:
        gc.collect()  # let the runs' connection pools go before dropping their databases
        for name in self.created:
            try:
                self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:
                print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)
        self.created.clear()


# --- report --------------------------------------------------------------------------------
def report(steps: int, results: dict[str, dict[str, list[float]]]) -> dict[str, bool]:
    """The table of medians; returns whether each store met its target."""
    runs = len(next(iter(results.values()))["engine"])
    header = (
        f"{'store':<10} {'engine (s)':>10} {'raw (s)':>8} {'overhead ms/step':>17} "
        f"{'engine/raw':>10} {'cpu ms/step':>12}"
    )
    print()
    print(f"median of {runs} run(s), {steps} steps each")
    print(header)
    print("-" * len(header))
    met: dict[str, bool] = {}
    for store, r in results.items():
        eng, raw = statistics.median(r["engine"]), statistics.median(r["raw"])
        per_step = (eng - raw) / steps * 1000
        cpu = (statistics.median(r["engine_cpu"]) - statistics.median(r["raw_cpu"])) / steps * 1000
        print(
            f"{store:<10} {eng:>10.2f} {raw:>8.2f} {per_step:>17.2f} {eng / raw:>9.2f}x "
            f"{cpu:>12.2f}"
        )
        met[store] = per_step <= TARGET_MS_PER_STEP[store]
    print("(cpu ms/step: extra CPU time of this process per step, engine minus raw; it leaves")
    print(" out the PostgreSQL server's work and is less sensitive to a noisy machine)")
    print()
    for store, ok in met.items():
        verdict = "met" if ok else "NOT met"
        print(f"target: ≤ {TARGET_MS_PER_STEP[store]:g} ms/step overhead on {store} — {verdict}")
    return met


def run_bench(args: argparse.Namespace, pg: Postgres) -> dict[str, dict[str, list[float]]]:
    stores = ["sqlite"] if args.no_postgres else ["sqlite", "postgres"]
    results: dict[str, dict[str, list[float]]] = {
        s: {"engine": [], "raw": [], "engine_cpu": [], "raw_cpu": []} for s in stores
    }
    with tempfile.TemporaryDirectory(prefix="tminus-bench-") as tmp:
        plan = Path(tmp) / "plan.yaml"
        write_plan(plan, args.steps)
        check_plan(plan)
        os.chdir(tmp)  # anything the engine writes relative to cwd stays in the temp dir
        urls: dict[str, Callable[[str], str]] = {
            "sqlite": lambda tag: f"sqlite:///{tmp}/state-{tag}.db",
            "postgres": pg.fresh,
        }
        warm = Path(tmp) / "warmup.yaml"  # imports and first-use costs, off the clock
        write_plan(warm, 3)
        time_raw(3)
        for store in stores:
            time_engine(warm, urls[store]("warmup"))
        for r in range(args.repeat):
            order = stores[r % len(stores) :] + stores[: r % len(stores)]
            for store in order:
                raw, raw_cpu = time_raw(args.steps)
                eng, eng_cpu = time_engine(plan, urls[store](str(r)))
                for key, value in (
                    ("raw", raw),
                    ("engine", eng),
                    ("raw_cpu", raw_cpu),
                    ("engine_cpu", eng_cpu),
                ):
                    results[store][key].append(value)
                print(
                    f"  run {r + 1}/{args.repeat} {store:<8} raw {raw:6.2f}s "
                    f"(cpu {raw_cpu:5.2f}s)  engine {eng:6.2f}s (cpu {eng_cpu:5.2f}s)",
                    flush=True,
                )
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000, help="no-op steps in the plan")
    ap.add_argument("--repeat", type=int, default=3, help="runs per store (medians reported)")
    ap.add_argument(
        "--pg-admin-url",
        default=DEFAULT_PG_ADMIN_URL,
        help="PostgreSQL server (any database on it) to create the bench databases on",
    )
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.repeat < 1:
        ap.error("--steps and --repeat must be at least 1")

    load1, load5, load15 = os.getloadavg()
    print(f"date {date.today()}, {os.cpu_count()} cpu(s), python {sys.version.split()[0]}")
    print(f"load average at start: {load1:.2f} {load5:.2f} {load15:.2f}")

    pg = Postgres(args.pg_admin_url)
    cwd = os.getcwd()
    try:
        results = run_bench(args, pg)
    except Exception as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if "psycopg" in type(exc).__module__:
            print("(is PostgreSQL up? --pg-admin-url URL, or --no-postgres)", file=sys.stderr)
        return 1
    finally:
        os.chdir(cwd)
        pg.drop_all()
    report(args.steps, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
