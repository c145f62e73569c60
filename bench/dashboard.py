"""The dashboard and the API of ``tminus serve`` at 10,000 deploys and 1,000,000 events
(issue #17): list and deploy pages, event pages, event to browser over SSE, an action.

    uv run python bench/dashboard.py [--store sqlite|pg|both] [--deploys 10000]
        [--events 100] [--long 5000] [--requests 200] [--sse 100] [--actions 200] [--pg URL]
        [--only http,sse,action,store] [--index NAME,...] [--profile DIR]

Each store is new: a SQLite file in a scratch directory, or a PostgreSQL database created
through the admin URL ``--pg`` (trust auth) and dropped at the end. Its schema is the store's
own (``Store(url)``: the Alembic revisions); it is then filled **in bulk with SQLAlchemy
Core** (``insert(table)`` with a list of rows per transaction), not through the engine: a
million events through ``Store.event`` (one transaction each) would take hours. What the fill
writes (a fixed random seed):

- ``--deploys`` deploys of 20 plans × 2 environments, created over the last two years (about
  14 a day), each with the plan text of its plan (about 3 KB; the 20 texts and hashes are
  shared); states: succeeded 84 %, failed 5 %, rolled back 5 %, aborted 3 %, and about 1 %
  awaiting approval, running (its runner gone: shown crashed) or scheduled weeks ahead, and
  the ``--actions`` deploys the action measure approves, paused (so an approval starts no
  worker; 2 % at the defaults);
- ``--events`` events per deploy (1,000,000 at the defaults), as a run writes them: created,
  phases, steps started and ended, host results, canary weights, analysis measurements, the
  summary and the end;
- 20 step rows and the phase rows for one deploy in five, and for the measured deploy (100
  events, 20 steps, two of them fleet steps with their hosts);
- ``--long``: one more deploy of that many events (5,000), all but its run's 100 watch
  measurements (a watch of a week), to see a deploy page whose log is long.

PostgreSQL is ``ANALYZE``d after the fill (autovacuum would do so after a bulk insert); SQLite
is not (tminus never runs ``ANALYZE``). ``--index`` creates extra indexes after the fill, to
measure what one would bring (``deploys_created``, ``deploys_state_created``,
``events_deploy_seq``, ``steps_deploy``; see :data:`INDEXES`).

Then a real ``tminus serve --bind 127.0.0.1:PORT`` on the store (``--profile DIR``: under
``python -m cProfile``, its top functions printed after it stops), a token made with
``tminus tokens create`` and grants with ``tminus access grant``, and measured with a
keep-alive HTTP client, one request at a time (the kinds in turn, in a new random order each
round, after a warm-up of ten rounds):

- **http**: ``GET /`` (the list page; also filtered by state and 100 pages deep),
  ``GET /api/v1/deploys``, ``GET /deploys/ID`` and its live ``/panel`` (what the page
  re-fetches on each event), ``GET /api/v1/deploys/ID`` and ``…/events?limit=200``: p50, p95,
  max of ``--requests`` each;
- **sse**: a stream open on a deploy; an event written into the store by this process (its own
  connection, as a worker or a ``tminus run`` elsewhere would), timed from before the write to
  its arrival on the stream; ``--sse`` samples, a random pause of 0–200 ms between them;
- **action**: ``POST /api/v1/deploys/ID/approve`` of ``--actions`` deploys, one each;
- **store**: the store's queries behind those pages timed in this process (no HTTP), to say
  where a page's time goes.

Targets (issue #17): list and deploy page p95 < 100 ms, SSE p95 < 500 ms, action < 50 ms.
Printed, not asserted; the exit status is non-zero only when something fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pstats
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, text

from tminus.store import schema as t
from tminus.store.store import Store

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PERSON = "bob"  # the approver (in the plans' release_manager role); the deploys' starter is alice
PLANS = [
    f"{a}-{b}"
    for a in ("billing", "search", "media", "accounts", "gateway")
    for b in ("api", "web", "worker", "db")
]
ENVS = ("prod", "staging")
#: Extra indexes ``--index`` may create after the fill (name: SQL).
INDEXES = {
    "deploys_created": "CREATE INDEX ix_bench_deploys_created ON deploys (created_at, id)",
    "deploys_state_created": (
        "CREATE INDEX ix_bench_deploys_state_created ON deploys (state, created_at, id)"
    ),
    "events_deploy_seq": "CREATE INDEX ix_bench_events_deploy_seq ON events (deploy_id, seq)",
    "steps_deploy": "CREATE INDEX ix_bench_steps_deploy ON steps (deploy_id)",
}
TARGETS = {"page": 0.100, "sse": 0.500, "action": 0.050}
STATES = [
    ("succeeded", 0.857),
    ("failed", 0.05),
    ("rolled_back", 0.05),
    ("aborted", 0.03),
    ("awaiting_approval", 0.005),
    ("running", 0.003),
    ("scheduled", 0.005),
]


def plan_text(name: str) -> str:
    """A plan of about 3 KB that loads: roles, an approval, three phases, 20 steps."""
    steps = []
    for i in range(20):
        phase = 0 if i < 6 else (1 if i < 14 else 2)
        steps.append(
            (
                phase,
                f"""      - kind: run
        name: step {i + 1} of {name}
        description: >-
          Runs part {i + 1} of the release of {name}: checks what it needs first, then does
          its work, and records what it did for the report.
        command: "echo {name} part {i + 1} && true"
        timeout: 5m
""",
            )
        )
    phases = []
    for p, title in enumerate(("prepare", "release", "verify")):
        body = "".join(s for ph, s in steps if ph == p)
        phases.append(f"  - name: {title}\n    estimate: {5 * (p + 1)}m\n    steps:\n{body}")
    return f"""tminus: 1
name: {name}
environment: prod
description: >-
  The release of {name}, as the team runs it every week: prepare, release, verify, with a
  release manager's approval first.
roles:
  operator: {{people: [alice]}}
  release_manager: {{people: [{PERSON}]}}
approvals:
  required: [release_manager]
  separation_of_duties: true
phases:
{"".join(phases)}"""


# --- stores -------------------------------------------------------------------------------------
@contextmanager
def fresh_store(kind: str, work: Path, admin: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{work / f'state-{uuid.uuid4().hex[:6]}' / 'tminus.db'}"
        return
    import psycopg

    name = f"tminus_bench_dash_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Filled:
    """What the fill made: the deploy measured, the one streamed, those approved."""

    def __init__(self) -> None:
        self.target = ""
        self.live = ""
        self.long = ""
        self.paused: list[str] = []
        self.deploys = 0
        self.events = 0
        self.steps = 0
        self.fill_s = 0.0


def _event_rows(
    deploy_id: str, n: int, t0: datetime, end: str, rnd: random.Random
) -> list[dict[str, Any]]:
    """``n`` events of one deploy, as a run writes them."""
    rows: list[dict[str, Any]] = []
    ts = t0

    def add(etype: str, key: str | None, message: str | None, data: Any = None) -> None:
        nonlocal ts
        ts = ts + timedelta(seconds=rnd.uniform(0.5, 20))
        rows.append(
            {
                "deploy_id": deploy_id,
                "ts": ts,
                "type": etype,
                "key": key,
                "message": message,
                "data": data,
            }
        )

    add("deploy.created", None, "started by alice")
    add("approval.given", "approvals", f"release_manager approved by {PERSON}", {"by": PERSON})
    i = 0
    while len(rows) < n - 2:
        p, s = divmod(i, 7)
        key = f"phase/{p % 3}/step/{s}"
        add("step.started", key, f"step {i + 1}", {"attempt": 1})
        kind = i % 5
        if kind == 1:
            for h in range(3):
                add(
                    "host.result",
                    key,
                    f"web{h + 1}: ok",
                    {"host": f"web{h + 1}", "status": "ok", "step": key},
                )
        elif kind == 2:
            add("canary.weight", key, f"canary at {5 * (i % 20 + 1)}%", {"weight": 5 * (i % 20)})
            add(
                "analysis.measurement",
                key,
                "error rate 0.2% (≤ 1%): pass",
                {"metric": "error_rate", "value": 0.002, "status": "pass", "threshold": 0.01},
            )
        add("step.succeeded", key, f"step {i + 1} done in {rnd.randint(1, 90)}s", None)
        i += 1
    del rows[n - 2 :]
    add("summary", None, "3 phases, 20 steps", {"metrics": []})
    add(f"deploy.{end}" if end in ("succeeded", "failed", "aborted") else "note", None, end)
    return rows


def fill(url: str, args: argparse.Namespace) -> Filled:
    """The store's schema (its migrations), then deploys, events, steps and phases in bulk."""
    Store(url).close()
    t_start = time.monotonic()
    rnd = random.Random(17)
    texts = {p: plan_text(p) for p in PLANS}
    hashes = {p: hashlib.sha256(x.encode()).hexdigest() for p, x in texts.items()}
    n = args.deploys
    now = datetime.now(UTC).replace(microsecond=0)
    span = timedelta(days=730)
    seqs: dict[str, int] = {}
    out = Filled()
    paused_at = {n - 1 - (i * n) // args.actions for i in range(args.actions)}
    out.target = ""
    target_i, live_i = n - 1 - 37, n - 1 - 41  # recent deploys, neither paused nor special
    paused_at.discard(target_i)
    paused_at.discard(live_i)
    deploys, events_batch, steps, phases = [], [], [], []
    engine = create_engine(url)
    states = [s for s, _ in STATES]
    weights = [w for _, w in STATES]

    def flush_events(conn: Any) -> None:
        if events_batch:
            conn.execute(insert(t.events), events_batch)
            out.events += len(events_batch)
            events_batch.clear()

    try:
        with engine.begin() as conn:
            for i in range(n):
                plan = PLANS[i % len(PLANS)]
                seqs[plan] = seqs.get(plan, 0) + 1
                created = now - span + span * i / n
                state = rnd.choices(states, weights)[0]
                if i in paused_at:
                    state = "paused"
                if i in (target_i, live_i):
                    state = "succeeded"
                ended = state in ("succeeded", "failed", "rolled_back", "aborted")
                finished = created + timedelta(minutes=rnd.uniform(5, 60)) if ended else None
                did = f"{plan}-{seqs[plan]}"
                if i == target_i:
                    out.target = did
                if i == live_i:
                    out.live = did
                if state == "paused":
                    out.paused.append(did)
                deploys.append(
                    {
                        "id": did,
                        "plan_name": plan,
                        "environment": ENVS[(i // len(PLANS)) % 2],
                        "seq": seqs[plan],
                        "plan_path": f"/srv/deploys/{plan}.yaml",
                        "plan_text": texts[plan],
                        "plan_hash": hashes[plan],
                        "state": state,
                        "reason": "paused by alice" if state == "paused" else None,
                        "started_by": "alice",
                        "host": "deploy-1",
                        "runner_pid": None,
                        "created_at": created,
                        "updated_at": finished or created,
                        "finished_at": finished,
                        "due_at": now + timedelta(days=rnd.randint(7, 60))
                        if state == "scheduled"
                        else None,
                        "overrides": {},
                        "heartbeat_at": created if state == "running" else None,
                    }
                )
                if i % 5 == 0 or i == target_i:
                    for p in range(3):
                        phases.append(
                            {
                                "deploy_id": did,
                                "idx": p,
                                "name": ("prepare", "release", "verify")[p],
                                "state": "succeeded",
                                "estimate_s": 300.0 * (p + 1),
                                "started_at": created,
                                "ended_at": created + timedelta(minutes=5 * (p + 1)),
                            }
                        )
                    for s in range(20):
                        fleet = s in (7, 8)
                        steps.append(
                            {
                                "deploy_id": did,
                                "key": f"phase/{0 if s < 6 else (1 if s < 14 else 2)}/step/{s}",
                                "title": f"step {s + 1} of {plan}",
                                "kind": "ssh" if fleet else "run",
                                "state": "succeeded",
                                "attempts": 1,
                                "started_at": created + timedelta(seconds=30 * s),
                                "ended_at": created + timedelta(seconds=30 * s + 20),
                                "output": f"{plan} part {s + 1}\n",
                                "error": None,
                                "artifacts": {
                                    "hosts": {f"web{h}": {"status": "ok"} for h in range(1, 9)}
                                }
                                if fleet
                                else None,
                                "step_id": None,
                            }
                        )
            conn.execute(insert(t.deploys), deploys)
            conn.execute(insert(t.phases), phases)
            conn.execute(insert(t.steps), steps)
        out.deploys, out.steps = len(deploys), len(steps)
        if args.long:  # one more deploy: a succeeded one with a long watch
            plan = PLANS[0]
            seqs[plan] += 1
            created = now - timedelta(days=10)
            long = deploys[-1] | {
                "id": f"{plan}-{seqs[plan]}",
                "plan_name": plan,
                "seq": seqs[plan],
                "plan_text": texts[plan],
                "plan_hash": hashes[plan],
                "state": "succeeded",
                "reason": None,
                "created_at": created,
                "updated_at": created + timedelta(hours=1),
                "finished_at": created + timedelta(hours=1),
                "due_at": None,
            }
            out.long = str(long["id"])
            with engine.begin() as conn:
                conn.execute(insert(t.deploys), [long])
            rows = _event_rows(out.long, args.events, created, "succeeded", rnd)
            at = created + timedelta(hours=1)
            for k in range(args.long - len(rows)):
                at += timedelta(minutes=2)
                check = ("error rate", "p95 latency")[k % 2]
                rows.append(
                    {
                        "deploy_id": out.long,
                        "ts": at,
                        "type": "watch.measurement",
                        "key": f"watch/{k}",
                        "message": f"{check}: ok",
                        "data": {
                            "check": check,
                            "at": at.isoformat(),
                            "status": "ok",
                            "value": rnd.uniform(0, 1),
                            "warn": 2.0,
                            "critical": 5.0,
                        },
                    }
                )
            events_batch.extend(rows)
        for d in deploys:
            end = str(d["state"])
            events_batch.extend(_event_rows(str(d["id"]), args.events, d["created_at"], end, rnd))
            if len(events_batch) >= 20_000:
                with engine.begin() as conn:
                    flush_events(conn)
        with engine.begin() as conn:
            flush_events(conn)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
        for name in filter(None, args.index.split(",")):
            with engine.begin() as conn:
                conn.execute(text(INDEXES[name]))
    finally:
        engine.dispose()
    out.fill_s = time.monotonic() - t_start
    return out


# --- the server ---------------------------------------------------------------------------------
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
    """One ``tminus serve`` process (under cProfile with ``profile``), its log in ``cwd``."""

    def __init__(self, url: str, cwd: Path, profile: Path | None) -> None:
        self.port = free_port()
        self.log = cwd / "serve.log"
        self.profile = profile
        argv = [sys.executable]
        if profile is not None:
            argv += ["-m", "cProfile", "-o", str(profile)]
        argv += ["-m", "tminus", "serve", "--bind", f"127.0.0.1:{self.port}", "--state", url]
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                argv, cwd=cwd, env=env(), stdin=subprocess.DEVNULL, stdout=fh, stderr=fh
            )
        deadline = time.monotonic() + 120
        while not self.healthy():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("tminus serve did not answer /healthz in 120 s")
            time.sleep(0.1)

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
            raise RuntimeError(f"tminus serve exited {self.proc.returncode}: {tail}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).is_success
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- figures ------------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]  # the nearest rank


class Table:
    def __init__(self, store: str) -> None:
        self.store = store
        self.rows: list[tuple[str, list[float], float | None]] = []

    def add(self, what: str, secs: list[float], target: float | None) -> None:
        self.rows.append((what, secs, target))

    def print(self) -> None:
        print(
            f"\n  {'measure (' + self.store + ')':<44} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} "
            f"{'max ms':>8}  target"
        )
        for what, secs, target in self.rows:
            mark = ""
            if target is not None:
                met = pct(secs, 95) < target
                mark = f"p95 < {1000 * target:g} ms: {'met' if met else 'MISSED'}"
            print(
                f"  {what:<44} {len(secs):4d} {1000 * pct(secs, 50):8.1f} "
                f"{1000 * pct(secs, 95):8.1f} {1000 * max(secs):8.1f}  {mark}"
            )


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_http(c: httpx.Client, f: Filled, args: argparse.Namespace, table: Table) -> None:
    tgt = f.target
    kinds: list[tuple[str, str, float | None, str]] = [
        ("GET / (list page)", "/", TARGETS["page"], "text/html"),
        ("GET /?state=failed", "/?state=failed", TARGETS["page"], "text/html"),
        ("GET /?page=100 (deploys 5001-5050)", "/?page=100", TARGETS["page"], "text/html"),
        ("GET /api/v1/deploys", "/api/v1/deploys", TARGETS["page"], "application/json"),
        ("GET /deploys/ID (deploy page)", f"/deploys/{tgt}", TARGETS["page"], "text/html"),
        ("GET /deploys/ID/panel (live part)", f"/deploys/{tgt}/panel", None, "text/html"),
        ("GET /api/v1/deploys/ID", f"/api/v1/deploys/{tgt}", None, "application/json"),
        (
            "GET /api/v1/deploys/ID/events?limit=200",
            f"/api/v1/deploys/{tgt}/events?limit=200",
            None,
            "application/json",
        ),
    ]
    if f.long:
        kinds.insert(
            6,
            (
                f"GET /deploys/LONG ({args.long} events)",
                f"/deploys/{f.long}",
                TARGETS["page"],
                "text/html",
            ),
        )
    # what each answer must hold, so a fast error page is never timed as a page
    must = {
        "/": "<table",
        "/api/v1/deploys": '"deploys"',
        f"/deploys/{tgt}": tgt,
        f"/api/v1/deploys/{tgt}/events?limit=200": '"events"',
    }
    times: dict[str, list[float]] = {k[0]: [] for k in kinds}
    # a new order each round: the server's tick (every 0.25 s, on the same loop) runs when the
    # loop is free, often right after the slowest request: it must not always delay the same
    rnd = random.Random(3)
    for r in range(args.requests + 10):
        for name, path, _, media in rnd.sample(kinds, len(kinds)):
            t0 = time.perf_counter()
            resp = c.get(path)
            dt = time.perf_counter() - t0
            if resp.status_code != 200 or media not in resp.headers.get("content-type", ""):
                raise RuntimeError(f"GET {path}: {resp.status_code} {resp.text[:300]}")
            if path in must and must[path] not in resp.text:
                raise RuntimeError(f"GET {path}: the answer lacks {must[path]!r}")
            if r >= 10:  # the first ten of each: warm-up
                times[name].append(dt)
    n_events = len(c.get(f"/api/v1/deploys/{tgt}/events?limit=500").json()["events"])
    for name, _, target, _ in kinds:
        table.add(name, times[name], target)
    print(f"  the deploy measured: {tgt} ({n_events} events)")


class SseReader(threading.Thread):
    """Reads a deploy's stream; the arrival time of each ``bench.ping`` by its number."""

    def __init__(self, port: int, token: str, deploy: str) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/api/v1/deploys/{deploy}/stream"
        self.token = token
        self.arrived: dict[int, float] = {}
        self.opened = threading.Event()
        self.stop = False
        self.error: BaseException | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            with httpx.stream("GET", self.url, headers=headers, timeout=60) as r:
                self.opened.set()
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        e = json.loads(line[6:])
                        if e["type"] == "bench.ping":
                            self.arrived[int(e["data"]["i"])] = time.perf_counter()
                    if self.stop:
                        return
        except BaseException as exc:  # reported by the measure
            self.error = exc
            self.opened.set()


def measure_sse(
    url: str, port: int, token: str, f: Filled, args: argparse.Namespace
) -> list[float]:
    reader = SseReader(port, token, f.live)
    reader.start()
    reader.opened.wait(30)
    store = Store(url)  # this process's own connection: another writer than the server
    rnd = random.Random(5)
    lat: list[float] = []
    try:
        time.sleep(1.0)  # the backlog of the deploy's events goes by first
        for i in range(args.sse):
            t0 = time.perf_counter()
            store.event(f.live, "bench.ping", f"ping {i}", data={"i": i})
            deadline = t0 + 10
            while i not in reader.arrived:
                if reader.error is not None:
                    raise RuntimeError(f"the stream ended: {reader.error!r}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"ping {i} did not arrive on the stream in 10 s")
                time.sleep(0.002)
            lat.append(reader.arrived[i] - t0)
            time.sleep(rnd.uniform(0, 0.2))
    finally:
        reader.stop = True
        store.event(f.live, "bench.done", "the stream may end")
        reader.join(5)
        store.close()
    return lat


def measure_actions(c: httpx.Client, f: Filled) -> list[float]:
    lat = []
    for did in f.paused:
        t0 = time.perf_counter()
        r = c.post(f"/api/v1/deploys/{did}/approve", json={"role": "release_manager"})
        lat.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"approve {did}: {r.status_code} {r.text[:300]}")
    return lat


def measure_store(url: str, f: Filled, args: argparse.Namespace, table: Table) -> None:
    """The queries behind the pages, in this process (no HTTP, no server loop)."""
    from tminus.engine.status import deploy_status
    from tminus.serve.auth import Caller
    from tminus.serve.dashboard import view

    store = Store(url)
    who = Caller(PERSON, "token", "127.0.0.1", "bench")
    since = datetime.now(UTC) - timedelta(days=60)
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("store.deploy_page()", lambda: store.deploy_page()),
        ("store.deploy_page(state='failed')", lambda: store.deploy_page(state="failed")),
        ("store.deploy_page(offset=5000)", lambda: store.deploy_page(offset=5000)),
        ("store.deploy(ID)", lambda: store.deploy(f.target)),
        ("store.events(ID)", lambda: store.events(f.target)),
        ("store.events_after(ID, 0, 200)", lambda: store.events_after(f.target, 0, 200)),
        ("store.step_rows(ID)", lambda: store.step_rows(f.target)),
        ("store.last_event_seq()", store.last_event_seq),
        ("deploy_status(ID)", lambda: deploy_status(store, f.target)),
        ("dashboard.view(ID)", lambda: view(store, f.target, who)),
        ("store.serve_deploys (each tick of the server)", lambda: store.serve_deploys(since)),
    ]
    if f.long:
        calls.insert(10, ("dashboard.view(LONG)", lambda: view(store, f.long, who)))
        calls.insert(5, ("store.events(LONG) (all of them)", lambda: store.events(f.long)))
    n = max(20, args.requests // 4)
    try:
        for name, fn in calls:
            fn()
            table.add(name, [timed(fn) for _ in range(n)], None)
    finally:
        store.close()


def print_profile(path: Path) -> None:
    if not path.exists():
        print(f"  (no profile written at {path})")
        return
    print(f"\n  the server's profile ({path}), top 30 by own time:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(30)
    print("  top 30 by cumulative time:")
    stats.sort_stats("cumulative").print_stats(30)


def run_store(kind: str, work: Path, args: argparse.Namespace) -> None:
    parts = set(args.only.split(","))
    print(f"\n## {kind}: {args.deploys} deploys, {args.events} events each")
    with fresh_store(kind, work, args.pg) as url:
        f = fill(url, args)
        print(
            f"  filled in {f.fill_s:.0f} s: {f.deploys} deploys, {f.events} events,"
            f" {f.steps} step rows; extra indexes: {args.index or 'none'}"
        )
        table = Table(kind)
        if "store" in parts:
            measure_store(url, f, args, table)
        if parts & {"http", "sse", "action"}:
            cwd = work / f"serve-{kind}"
            cwd.mkdir()
            token = tminus(url, cwd, "tokens", "create", "--person", PERSON).strip()
            token = token.splitlines()[-1]
            tminus(url, cwd, "access", "grant", PERSON, "operator")
            tminus(url, cwd, "access", "grant", PERSON, "approver")
            profile = Path(args.profile) / f"serve-{kind}.prof" if args.profile else None
            server = Server(url, cwd, profile)
            try:
                time.sleep(2.0)  # the first ticks plan the deploys it looks after
                headers = {"Authorization": f"Bearer {token}", "User-Agent": "bench/1"}
                base = f"http://127.0.0.1:{server.port}"
                with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
                    if "http" in parts:
                        measure_http(c, f, args, table)
                    if "sse" in parts:
                        lat = measure_sse(url, server.port, token, f, args)
                        table.add("event -> SSE stream (written elsewhere)", lat, TARGETS["sse"])
                    if "action" in parts:
                        table.add(
                            "POST /api/v1/deploys/ID/approve",
                            measure_actions(c, f),
                            TARGETS["action"],
                        )
            finally:
                server.stop()
            if profile is not None:
                print_profile(profile)
        table.print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=("sqlite", "pg", "both"), default="both")
    ap.add_argument("--pg", default=PG_ADMIN, metavar="URL", help="PostgreSQL admin URL")
    ap.add_argument("--deploys", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=100, help="events per deploy")
    ap.add_argument("--requests", type=int, default=200, help="requests of each kind")
    ap.add_argument("--sse", type=int, default=100, help="events timed over SSE")
    ap.add_argument("--actions", type=int, default=200, help="approvals timed")
    ap.add_argument(
        "--long", type=int, default=5000, help="events of one more deploy (a long watch)"
    )
    ap.add_argument("--only", default="http,sse,action,store", help="comma-separated parts")
    ap.add_argument(
        "--index", default="", help=f"extra indexes after the fill: {', '.join(INDEXES)}"
    )
    ap.add_argument("--profile", metavar="DIR", help="run the server under cProfile")
    args = ap.parse_args()
    unknown = [x for x in args.index.split(",") if x and x not in INDEXES]
    if unknown:
        ap.error(f"no such index: {', '.join(unknown)} (known: {', '.join(INDEXES)})")
    if args.events < 20:
        ap.error("--events must be at least 20 (a run's events)")
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    work = Path(tempfile.mkdtemp(prefix="tminus-bench-dash-"))
    try:
        for kind in ["sqlite", "pg"] if args.store == "both" else [args.store]:
            run_store(kind, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
