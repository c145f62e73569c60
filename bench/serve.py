"""The figures of ``tminus serve`` (issue #15): firing skew, idle CPU, takeover after kill -9.

    uv run python bench/serve.py [--only skew,idle,takeover] [--store sqlite|pg|both]
        [--timers 10000] [--window-s 120] [--burst 2000] [--idle-s 60] [--runs 3] [--pg URL]
        [--hosts same|two|both]

Every server is a real ``tminus serve --bind 127.0.0.1:PORT`` process on the wall clock (no
testing seam), in a scratch directory, on a fresh store: a SQLite file, or a fresh PostgreSQL
database created through the admin URL ``--pg`` and dropped at the end. Figures are printed,
not asserted; the exit status is non-zero only when something fails.

- **skew**: a deploy registered with ``tminus schedule`` (T-0 30 days ahead), N ``notice``
  timers added with ``Store.add_timers``, due over ``--window-s`` s from 15 s on, then the
  server. Once none is pending: fired, keys with two ``notify`` events (must be 0), skew
  ``fired_at - due_at`` p50/p90/p99/max, throughput, CPU. Then ``--burst`` due at once.
- **idle**: a server with N timers due days ahead beside one on an empty store; utime+stime
  of each (/proc/PID/stat, children excluded) over ``--idle-s`` s, as % of one core.
- **takeover** (PostgreSQL): two servers; a deploy whose one step is ``idempotent: true`` and
  runs ``sleep 20 && touch done``, scheduled ``--at +3s``; once the step runs, the server
  holding the deploy (its ``drive`` row's ``lease_owner``) is killed with SIGKILL; from the
  kill: the other's claim, ``deploy.resumed``, success. ``--hosts two``: the second server in
  its own UTS namespace (another hostname), so the heartbeat timeout applies.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tminus.engine.liveness import HEARTBEAT_S, HEARTBEAT_TIMEOUT_S
from tminus.serve.server import CLAIM_BATCH, LEASE, TICK_S
from tminus.store import schema as t
from tminus.store.store import Store

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
CLK = os.sysconf("SC_CLK_TCK")
LEAD_S = 15.0
NOTICE_PLAN = """\
tminus: 1
name: bench-timers
environment: bench
notifications:
  channels:
    team:
      kind: log
  rules:
    - when: before_window
      before: 1h
phases:
  - name: deploy
    steps:
      - kind: run
        name: nothing
        command: "true"
"""
TAKEOVER_PLAN = """\
tminus: 1
name: bench-takeover
environment: bench
phases:
  - name: deploy
    steps:
      - kind: run
        name: slow and idempotent
        idempotent: true
        command: sleep 20 && touch done
"""


# --- stores and servers ------------------------------------------------------------------------
@contextmanager
def fresh_store(kind: str, work: Path, admin: str) -> Iterator[str]:
    """The URL of a new empty store: a SQLite file under ``work``, or a new PostgreSQL
    database (dropped on the way out)."""
    if kind == "sqlite":
        path = work / f"state-{uuid.uuid4().hex[:6]}" / "tminus.db"
        yield f"sqlite:///{path}"
        return
    import psycopg

    name = f"tminus_bench_serve_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def env() -> dict[str, str]:
    e = dict(os.environ, TMINUS_OPERATOR="bench")
    for k in ("TMINUS_STATE", "TMINUS_CLOCK_FILE", "TMINUS_CLOCK_OFFSET"):
        e.pop(k, None)
    return e


def tminus(url: str, cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "tminus", *args, "--state", url],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"tminus {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``tminus serve`` process, its log in ``cwd``."""

    def __init__(self, url: str, cwd: Path, name: str, host: str | None = None) -> None:
        self.port = free_port()
        self.log = cwd / f"{name}.log"
        self.host = host
        argv = [sys.executable, "-m", "tminus", "serve", "--bind", f"127.0.0.1:{self.port}"]
        if host:  # its own hostname (a UTS namespace): to it, the other server is elsewhere
            argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *argv]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                [*argv, "--state", url],
                cwd=cwd,
                env=env(),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=fh,
            )
        t0 = time.monotonic()
        wait_for(f"{name} to answer /healthz", self.healthy, 60, 0.05)
        self.ready_s = time.monotonic() - t0

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"tminus serve exited {self.proc.returncode}: {self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                return True
        except OSError:
            return False

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])

    def cpu_s(self) -> float:
        """utime + stime of the server process (its workers excluded)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_for(what: str, cond: Callable[[], Any], timeout: float, every: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def schedule(url: str, cwd: Path, plan_text: str, at: str) -> str:
    plan = cwd / f"plan-{uuid.uuid4().hex[:6]}.yaml"
    plan.write_text(plan_text)
    out = tminus(url, cwd, "schedule", str(plan), "--at", at)
    return out.split()[1]  # "deploy NAME-N scheduled: ..."


def machine() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, every core and process (/proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def busy(m0: tuple[int, int]) -> str:
    m1 = machine()
    return f"machine busy {100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]):.0f}%"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]  # the nearest rank


# --- skew -----------------------------------------------------------------------------------------
def add_notices(store: Store, deploy: str, dues: list[datetime], tag: str) -> None:
    specs = [
        {
            "key": f"bench:{tag}:{i}",
            "kind": "notice",
            "due_at": due,
            "data": {"rule": 0, "shown": "T-x"},
        }
        for i, due in enumerate(dues)
    ]
    for i in range(0, len(specs), 1000):
        store.add_timers(deploy, specs[i : i + 1000])


def pending(store: Store, deploy: str, tag: str) -> int:
    q = select(func.count()).where(
        t.timers.c.deploy_id == deploy,
        t.timers.c.state == "pending",
        t.timers.c.key.startswith(f"bench:{tag}:"),
    )
    with store.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def skew_case(
    url: str, work: Path, name: str, dues_from: Callable[[datetime], list[datetime]]
) -> None:
    store = Store(url)
    deploy = schedule(url, work, NOTICE_PLAN, "+30d")
    tag = uuid.uuid4().hex[:6]
    t_plan = time.monotonic()
    dues = dues_from(datetime.now(UTC) + timedelta(seconds=LEAD_S))
    add_notices(store, deploy, dues, tag)
    planned = time.monotonic() - t_plan
    server = Server(url, work, f"serve-{name}")
    print(
        f"  {name}: {len(dues)} timers planned in {planned:.1f} s; server ready in"
        f" {server.ready_s:.1f} s; the first due {LEAD_S:g} s after planning began"
    )
    cpu0, m0 = server.cpu_s(), machine()
    try:
        last_due = (max(dues) - datetime.now(UTC)).total_seconds()
        wait_for(
            f"{name}: every timer fired",
            lambda: pending(store, deploy, tag) == 0,
            max(0.0, last_due) + 300,
            1.0,
        )
        cpu, load = server.cpu_s() - cpu0, busy(m0)
    finally:
        server.stop()
    rows = [r for r in store.timers(deploy) if str(r["key"]).startswith(f"bench:{tag}:")]
    notes = [
        e
        for e in store.events(deploy, types=("notify",))
        if str(e["key"]).startswith(f"bench:{tag}:")
    ]
    store.close()
    done = [r for r in rows if r["state"] == "done"]
    skew = [(r["fired_at"] - r["due_at"]).total_seconds() for r in done]
    before = [float((e["data"] or {}).get("late_s", 0.0)) for e in notes]
    twice = sum(1 for n in Counter(e["key"] for e in notes).values() if n > 1)
    span = (max(r["fired_at"] for r in done) - min(r["due_at"] for r in done)).total_seconds()
    states = Counter(str(r["state"]) for r in rows)
    print(
        f"  {'case':<8} {'fired':>6} {'twice':>5} {'p50 s':>6} {'p90 s':>6} {'p99 s':>6} "
        f"{'max s':>6} {'t/s':>6} {'cpu s':>6} {'ms/timer':>8}"
    )
    print(
        f"  {name:<8} {len(done):6d} {twice:5d} {pct(skew, 50):6.3f} {pct(skew, 90):6.3f} "
        f"{pct(skew, 99):6.3f} {max(skew):6.3f} {len(done) / max(span, 1e-9):6.0f} "
        f"{cpu:6.1f} {1000 * cpu / max(1, len(done)):8.2f}"
    )
    print(
        f"  {'':<8} of which before firing began (notice late_s): p50 {pct(before, 50):.3f}"
        f", p99 {pct(before, 99):.3f}, max {max(before):.3f}; notify events {len(notes)};"
        f" states {dict(states)}; {load}"
    )


def run_skew(kind: str, work: Path, args: argparse.Namespace) -> None:
    n, w = args.timers, args.window_s
    print(f"\n## skew ({kind}): {n} timers due over {w:g} s, then {args.burst} due at once")
    with fresh_store(kind, work, args.pg) as url:
        skew_case(
            url, work, "spread", lambda t0: [t0 + timedelta(seconds=w * i / n) for i in range(n)]
        )
    with fresh_store(kind, work, args.pg) as url:
        skew_case(url, work, "burst", lambda t0: [t0] * args.burst)
    print(
        f"  Ticks are {TICK_S} s apart: a timer due between two ticks waits for the next one,"
        f" 0-{TICK_S} s (p50 {TICK_S / 2:g} s, p99 {TICK_S * 0.99:.3f} s) even with no work;"
        f" the rest is the tick's work: claims of {CLAIM_BATCH} timers per transaction, then"
        " each fired and committed in turn (a timer waits for those claimed before it)."
    )


# --- idle -----------------------------------------------------------------------------------------
def run_idle(kind: str, work: Path, args: argparse.Namespace) -> None:
    n = args.timers
    print(
        f"\n## idle CPU ({kind}): {n} timers due days ahead vs an empty store,"
        f" {args.idle_s:g} s after {args.settle_s:g} s"
    )
    with fresh_store(kind, work, args.pg) as full, fresh_store(kind, work, args.pg) as empty:
        store = Store(full)
        deploy = schedule(full, work, NOTICE_PLAN, "+30d")
        t0 = datetime.now(UTC) + timedelta(days=2)
        add_notices(store, deploy, [t0 + timedelta(days=7 * i / n) for i in range(n)], "idle")
        store.close()
        Store(empty).close()  # the schema, so both servers start alike
        servers = {
            f"{n} timers": Server(full, work, "idle-full"),
            "0 timers": Server(empty, work, "idle-empty"),
        }
        try:
            time.sleep(args.settle_s)
            before, m0 = {k: s.cpu_s() for k, s in servers.items()}, machine()
            t_start = time.monotonic()
            time.sleep(args.idle_s)
            wall = time.monotonic() - t_start
            used = {k: s.cpu_s() - before[k] for k, s in servers.items()}
            load = busy(m0)
        finally:
            for s in servers.values():
                s.stop()
    print(f"  {'server':<14} {'cpu s':>6} {'% core':>7} {'ms/tick':>8}")
    for k, cpu in used.items():
        print(f"  {k:<14} {cpu:6.2f} {100 * cpu / wall:6.2f}% {1000 * cpu / (wall / TICK_S):8.2f}")
    print(
        f"  (one tick every {TICK_S} s: {1 / TICK_S:g} passes a second, each reading the deploys"
        f" and claiming due timers; a heartbeat row each second; {load}, load average"
        f" {os.getloadavg()[0]:.2f})"
    )


# --- takeover -------------------------------------------------------------------------------------
def drive_owner(store: Store, deploy: str) -> str | None:
    rows = [r for r in store.timers(deploy, kinds=("drive",)) if r["state"] == "pending"]
    return str(rows[-1]["lease_owner"]) if rows else None


def step_running(store: Store, deploy: str) -> bool:
    with store.engine.connect() as conn:
        q = select(func.count()).where(t.steps.c.deploy_id == deploy, t.steps.c.state == "running")
        return int(conn.execute(q).scalar_one()) > 0


def takeover_once(url: str, work: Path, servers: dict[int, Server], i: int) -> dict[str, float]:
    store = Store(url)
    deploy = schedule(url, work, TAKEOVER_PLAN, "+3s")
    wait_for("the runner to start the step", lambda: step_running(store, deploy), 60, 0.1)
    owner = drive_owner(store, deploy)
    if owner is None:
        raise RuntimeError(f"{deploy}: no drive row held while its step runs")
    pid = int(owner.split(":")[1])
    victim = servers.pop(pid)
    old_runner = store.deploy(deploy)["runner_pid"]
    os.kill(pid, signal.SIGKILL)
    killed = datetime.now(UTC)
    victim.proc.wait()

    def resumed() -> datetime | None:
        found = [
            e["ts"] for e in store.events(deploy, types=("deploy.resumed",)) if e["ts"] > killed
        ]
        return found[0] if found else None

    resumed_at = wait_for("deploy.resumed after the kill", resumed, 120, 0.1)
    d = wait_for(
        "the deploy to end", lambda: (x := store.deploy(deploy))["finished_at"] and x, 120, 0.2
    )
    claims = [
        r for r in store.timers(deploy, kinds=("drive",)) if str(r["key"]).startswith("takeover:")
    ]
    new = Server(url, work, f"serve-{i}", victim.host)  # two servers again for the next run
    servers[new.proc.pid] = new
    store.close()
    if d["state"] != "succeeded":
        raise RuntimeError(f"{deploy} ended {d['state']}")
    times = {"claim": claims[0]["due_at"], "resumed": resumed_at, "succeeded": d["finished_at"]}
    out = {k: (at - killed).total_seconds() for k, at in times.items()}
    return out | {"old_runner": float(old_runner or 0), "new_runner": float(d["runner_pid"] or 0)}


def run_takeover(work: Path, args: argparse.Namespace, hosts: str) -> None:
    print(
        f"\n## takeover after kill -9 (pg, {hosts} host{'s' if hosts == 'two' else ''}):"
        f" 2 servers, {args.runs} runs, a 20 s idempotent step"
    )
    with fresh_store("pg", work, args.pg) as url:
        Store(url).close()
        servers: dict[int, Server] = {}
        other = f"{socket.gethostname()}-b" if hosts == "two" else None
        for name, host in (("serve-a", None), ("serve-b", other)):
            s = Server(url, work, name, host)
            servers[s.proc.pid] = s
        results = []
        try:
            for i in range(args.runs):
                r = takeover_once(url, work, servers, i)
                results.append(r)
                print(
                    f"  run {i + 1}: claimed by the other server {r['claim']:.2f} s after the"
                    f" kill, deploy.resumed {r['resumed']:.2f} s, succeeded {r['succeeded']:.1f}"
                    f" s (runner pid {r['old_runner']:.0f} -> {r['new_runner']:.0f})"
                )
        finally:
            for s in servers.values():
                s.stop()
    print(f"  {'from the kill to':<26} {'median s':>8} {'max s':>7}")
    for k, label in (
        ("claim", "the other server's claim"),
        ("resumed", "deploy.resumed"),
        ("succeeded", "success (step run again)"),
    ):
        vals = [r[k] for r in results]
        print(f"  {label:<26} {statistics.median(vals):8.2f} {max(vals):7.2f}")
    print(
        f"  Same host: the worker dies with its server (PR_SET_PDEATHSIG), the other server's"
        f" next tick (every {TICK_S} s) finds the runner's pid gone and claims the deploy; the"
        " rest is a new `tminus resume` process starting. On another host the runner is dead"
        f" only once its heartbeat (every {HEARTBEAT_S:g} s) is {HEARTBEAT_TIMEOUT_S:g} s old:"
        f" about {HEARTBEAT_TIMEOUT_S - HEARTBEAT_S:g}-{HEARTBEAT_TIMEOUT_S:g} s after the kill"
        " plus the same claim and start-up (`--hosts two` measures it); timers the dead server"
        " had claimed wait for"
        f" their {LEASE.total_seconds():g} s lease."
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="skew,idle,takeover", help="comma-separated parts")
    ap.add_argument(
        "--store",
        choices=("sqlite", "pg", "both"),
        default="sqlite",
        help="the store of skew and idle (takeover is always PostgreSQL)",
    )
    ap.add_argument("--pg", default=PG_ADMIN, metavar="URL", help="PostgreSQL admin URL")
    ap.add_argument("--timers", type=int, default=10_000)
    ap.add_argument("--window-s", type=float, default=120.0)
    ap.add_argument("--burst", type=int, default=2_000)
    ap.add_argument("--idle-s", type=float, default=60.0)
    ap.add_argument("--settle-s", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=3, help="takeover runs")
    ap.add_argument(
        "--hosts",
        choices=("same", "two", "both"),
        default="same",
        help="takeover: both servers on this host, or the second one in its own"
        " UTS namespace (another hostname: the heartbeat timeout applies)",
    )
    args = ap.parse_args()
    parts = set(args.only.split(","))
    kinds = ["sqlite", "pg"] if args.store == "both" else [args.store]
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    work = Path(tempfile.mkdtemp(prefix="tminus-bench-serve-"))
    try:
        for kind in kinds:
            if "skew" in parts:
                run_skew(kind, work, args)
            if "idle" in parts:
                run_idle(kind, work, args)
        if "takeover" in parts:
            for hosts in ("same", "two") if args.hosts == "both" else (args.hosts,):
                run_takeover(work, args, hosts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
