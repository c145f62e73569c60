"""A crash campaign: run a real plan, SIGKILL the runner at one durable point, resume as an
operator would, and judge the result from independent evidence only.

The plan (``PLAN``, in :mod:`tminus.testing._campaign_plan`) touches real things: a
PostgreSQL database (a backup, a migration of numbered up/down SQL files whose rollback
restores the backup), files (a config file
replaced, with an undo that puts the old one back), maintenance mode, local commands, and
three **non-idempotent** steps that append to a ledger file the steps themselves write (their
undo steps append too, and so does a phase's ``rollback:`` step). An operation of the same plan
appends to the ledger as well.

Crash points (see :mod:`tminus.faults`): right after the runner's N-th commit, right after its
N-th child process group was recorded (the child is still running: an orphan), and right after
the N-th action's effect, before its record (the hard case). Variants: a deploy that succeeds,
one whose last step fails and rolls back, and an operation.

The judge reads only: the ledger, the database's schema and rows, the config file's bytes,
``/proc`` (no process of the campaign left running) and the deploy's final state. It never
reads the ledger to decide how to answer tminus: where tminus pauses naming an action that was
in flight, the campaign answers from what it knows about the crash it caused (the crash report:
had the in-flight action's effect finished, and had it succeeded?), as an operator who checked
would: skip if it had finished well, roll back if it had failed, retry if it had not finished.
Where the report cannot know (a crash right after a child was recorded: on a loaded machine
the child can finish before its runner is killed), the operator reads the action's own
exit-status marker (``DONE``), as one would look at how the action's process had ended;
without it, the campaign retried an action that had run (CI, session 9: ``fwd:finish`` twice).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tminus.states import TERMINAL
from tminus.testing._campaign_plan import (
    DONE,
    EXPECTED_LEDGER,
    EXPECTED_STATE,
    PLAN,
    ROWS,
    SLOW,
)
from tminus.testing.seam import VARIABLES

__all__ = [
    "KINDS",
    "STORES",
    "VARIANTS",
    "Campaign",
    "Outcome",
    "Point",
    "format_table",
    "sample",
]

VARIANTS = ("success", "rollback", "operation")
STORES = ("sqlite", "postgres")
KINDS = ("commit", "spawn", "effect")
_ENV = {
    "commit": "TMINUS_CRASH_AFTER_COMMITS",
    "spawn": "TMINUS_CRASH_AFTER_SPAWNS",
    "effect": "TMINUS_CRASH_AFTER_EFFECTS",
}


@dataclass(frozen=True)
class Point:
    variant: str
    kind: str
    n: int

    def __str__(self) -> str:
        return f"{self.variant}/{self.kind}#{self.n}"


@dataclass
class Outcome:
    point: Point
    crashed: bool = False
    shown: str = ""  # the state `tminus status` showed after the crash, before any resume
    final: str = ""
    pauses: list[str] = field(default_factory=list)  # in-flight actions tminus paused on
    answers: list[str] = field(default_factory=list)
    double: list[str] = field(default_factory=list)  # ledger lines seen more than once
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


class Campaign:
    """One working directory and one PostgreSQL cluster (``pg_admin``: a URL of a database
    the campaign may create other databases from). ``store``: where tminus keeps its state,
    ``sqlite`` (the default store, a file in each point's work directory) or ``postgres``
    (a fresh database of that cluster per point, beside the plan's target database)."""

    def __init__(
        self, workdir: Path, pg_admin: str, python: str = sys.executable, store: str = "sqlite"
    ) -> None:
        if store not in STORES:
            raise ValueError(f"store must be one of {STORES}, not {store!r}")
        self.root = workdir
        self.pg_admin = pg_admin
        self.python = python
        self.store = store
        #: The state database of each point (PostgreSQL store), by its work directory.
        self._state: dict[Path, str] = {}
        self.env = {**os.environ, "TMINUS_OPERATOR": "alice", "TMINUS_KILL_GRACE_S": "2"}
        self.env.pop("TMINUS_STATE", None)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        for name in VARIABLES:
            self.env.pop(name, None)

    # --- the world ------------------------------------------------------------------------
    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.pg_admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.encode())

    def _sql(self, url: str, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql.encode())
            return list(cur.fetchall()) if cur.description else []

    def prepare(self, point: Point) -> tuple[Path, str]:
        """A fresh work directory and database for one point."""
        work = self.root / f"{point.variant}-{point.kind}-{point.n}-{uuid.uuid4().hex[:6]}"
        work.mkdir(parents=True)
        db = f"tminus_campaign_{uuid.uuid4().hex[:10]}"
        self._admin(f'CREATE DATABASE "{db}"')
        url = self.pg_admin.rsplit("/", 1)[0] + f"/{db}"
        values = ", ".join(f"({i}, 'item-{i}')" for i in range(1, ROWS + 1))
        self._sql(url, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        self._sql(url, f"INSERT INTO items VALUES {values}")
        mig = work / "migrations"
        mig.mkdir()
        (mig / "000001_note.up.sql").write_text(
            "ALTER TABLE items ADD COLUMN note TEXT;\nUPDATE items SET note = 'n';\n"
        )
        (mig / "000001_note.down.sql").write_text("ALTER TABLE items DROP COLUMN note;\n")
        (work / "config.old").write_text("version = 1\n")
        (work / "config.new").write_text("version = 2\n")
        (work / "app.conf").write_text("version = 1\n")
        plan = re.sub(r"<done (\w+)>", DONE, PLAN)
        (work / "plan.yaml").write_text(plan.format(work=work, url=url, rows=ROWS, slow=SLOW))
        if self.store == "postgres":
            state_db = f"tminus_campaign_state_{uuid.uuid4().hex[:10]}"
            self._admin(f'CREATE DATABASE "{state_db}"')
            self._state[work] = self.pg_admin.rsplit("/", 1)[0] + f"/{state_db}"
        return work, url

    def drop(self, url: str, work: Path | None = None) -> None:
        """Drop a point's target database (and its state database, if it had one)."""
        dbs = [url.rsplit("/", 1)[1]]
        state = self._state.pop(work, None) if work is not None else None
        if state is not None:
            dbs.append(state.rsplit("/", 1)[1])
        for db in dbs:
            self._admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def evidence(self, work: Path, url: str) -> dict[str, Any]:
        cols = [
            r[0]
            for r in self._sql(
                url,
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'items' ORDER BY ordinal_position",
            )
        ]
        rows = self._sql(url, "SELECT * FROM items ORDER BY id")
        ledger = work / "ledger"
        return {
            "columns": cols,
            "rows": hashlib.sha256(repr(rows).encode()).hexdigest(),
            "config": (work / "app.conf").read_text(),
            "ledger": ledger.read_text().split() if ledger.exists() else [],
            "maintenance": (work / "maintenance.flag").exists(),
        }

    # --- tminus ---------------------------------------------------------------------------
    def tm(self, work: Path, *args: str, env: dict[str, str] | None = None) -> Any:
        state = {"TMINUS_STATE": self._state[work]} if work in self._state else {}
        return subprocess.run(
            [self.python, "-m", "tminus.testing.seam", *args],
            cwd=work,
            env={**self.env, **state, **(env or {})},
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )

    def _start(self, point: Point, work: Path, env: dict[str, str]) -> Any:
        if point.variant == "operation":
            return self.tm(work, "op", "run", "plan.yaml", "rotate", env=env)
        extra = ["--var", "fail=yes"] if point.variant == "rollback" else []
        return self.tm(work, "run", "plan.yaml", *extra, env=env)

    def count(self, variant: str) -> dict[str, int]:
        """How many points of each kind a run of ``variant`` without a crash passes."""
        work, url = self.prepare(Point(variant, "count", 0))
        try:
            counts = work / "counts.json"
            env = {"TMINUS_FAULT_COUNTS": str(counts)}
            proc = self._start(Point(variant, "count", 0), work, env)
            if proc.returncode not in (0, 1):
                raise RuntimeError(f"the {variant} run failed: {proc.stdout}{proc.stderr}")
            data = json.loads(counts.read_text())
            return {k: int(data[k + "s"]) for k in KINDS}
        finally:
            self.drop(url, work)

    def run_point(self, point: Point) -> Outcome:
        t0 = time.monotonic()
        out = Outcome(point)
        work, url = self.prepare(point)
        try:
            before = self.evidence(work, url)
            report = work / "crash.jsonl"
            env = {_ENV[point.kind]: str(point.n), "TMINUS_CRASH_REPORT": str(report)}
            proc = self._start(point, work, env)
            out.crashed = proc.returncode == -9
            deploy = self._deploy_id(work)
            if deploy is None:
                out.problems.append(f"no deploy recorded (exit {proc.returncode}): {proc.stderr}")
                return out
            if out.crashed:
                out.shown = str(self._status(work, deploy).get("state"))
                if out.shown in ("pending", "running", "rolling_back"):
                    out.problems.append(f"status shows a dead runner's deploy as {out.shown}")
            self._drive_to_end(work, deploy, report, out)
            self._settle(work)
            after = self.evidence(work, url)
            self._judge(point.variant, before, after, out)
            leftovers = _processes_under(work)
            if leftovers:
                out.problems.append(f"processes left running: {leftovers}")
        except Exception as exc:  # the campaign reports; it does not stop at one point
            out.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            self.drop(url, work)
            out.seconds = time.monotonic() - t0
        return out

    def _deploy_id(self, work: Path) -> str | None:
        proc = self.tm(work, "list", "--output", "json")
        if proc.returncode != 0:
            return None
        rows = json.loads(proc.stdout)
        return str(rows[0]["id"]) if rows else None

    def _status(self, work: Path, deploy: str) -> dict[str, Any]:
        proc = self.tm(work, "status", deploy, "--output", "json")
        return dict(json.loads(proc.stdout)) if proc.returncode == 0 else {}

    def _drive_to_end(self, work: Path, deploy: str, report: Path, out: Outcome) -> None:
        for _ in range(12):
            info = self._status(work, deploy)
            state = str(info.get("state"))
            if state in TERMINAL:
                out.final = state
                return
            action: list[str] = []
            if state == "paused":
                inflight = [s for s in info.get("steps", []) if s["state"] == "running"]
                if len(inflight) != 1:
                    out.problems.append(f"paused without naming one in-flight action: {info}")
                    out.final = state
                    return
                step = inflight[0]
                out.pauses.append(step["key"])
                if step["title"] not in (info.get("reason") or ""):
                    out.problems.append(f"the pause does not name {step['title']!r}")
                action = [self._operator_answer(report, work, step)]
                out.answers.append(action[0])
            proc = self.tm(work, "resume", deploy, *action)
            if proc.returncode not in (0, 1, 3):
                out.problems.append(f"resume exit {proc.returncode}: {proc.stderr.strip()}")
                out.final = state
                return
        out.final = str(self._status(work, deploy).get("state"))
        out.problems.append(f"not finished after 12 resumes: {out.final}")

    @staticmethod
    def _operator_answer(report: Path, work: Path, step: dict[str, Any]) -> str:
        """What an operator who checked would answer: the campaign knows where it crashed.

        Where the crash report says the effect had not finished, the action's own process may
        still have finished before its runner died (a crash right after a child was recorded,
        on a loaded machine): its exit-status marker (``DONE``) says so, as the process's
        result would tell an operator who looked."""
        lines = report.read_text().splitlines() if report.exists() else []
        last = json.loads(lines[-1]) if lines else {}
        if last.get("inflight") == step["key"] and last.get("effect_done"):
            # it ran: skip it if it succeeded; if it failed, do what its phase says (roll back)
            return "--skip-step" if last.get("effect_ok") else "--rollback"
        marker = work / f"done.{str(step['title']).replace(' ', '_')}"
        if marker.exists():
            return "--skip-step" if marker.read_text().strip() == "0" else "--rollback"
        return "--retry-step"

    @staticmethod
    def _settle(work: Path) -> None:
        """Let the processes of the last command end (bounded); what is left is an orphan."""
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and _processes_under(work):
            time.sleep(0.1)

    @staticmethod
    def _judge(variant: str, before: dict[str, Any], after: dict[str, Any], out: Outcome) -> None:
        want = EXPECTED_STATE[variant]
        if out.final != want:
            out.problems.append(f"ended {out.final}, expected {want}")
        ledger = after["ledger"]
        out.double = sorted({x for x in ledger if ledger.count(x) > 1})
        if out.double:
            out.problems.append(f"applied twice: {out.double}")
        if ledger != EXPECTED_LEDGER[variant]:
            out.problems.append(f"ledger {ledger} != {EXPECTED_LEDGER[variant]}")
        if after["maintenance"]:
            out.problems.append("maintenance left on")
        if variant == "rollback":
            for k in ("columns", "rows", "config"):
                if after[k] != before[k]:
                    out.problems.append(f"data differs after rollback: {k}")
        elif variant == "success":
            if after["columns"] != [*before["columns"], "note"]:
                out.problems.append(f"not migrated: columns {after['columns']}")
            if after["config"] != "version = 2\n":
                out.problems.append("config not replaced")
        else:
            for k in ("columns", "rows", "config"):
                if after[k] != before[k]:
                    out.problems.append(f"the operation changed {k}")


def _processes_under(work: Path) -> list[str]:
    """Processes (other than tminus CLIs) whose command line names the work directory: the
    campaign's step commands and the dump tools writing into it."""
    marker = str(work)
    found: list[str] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
        if marker in cmd and " -m tminus " not in f" {cmd} ":
            found.append(f"{entry}: {cmd[:120]}")
    return found


def format_table(outcomes: list[Outcome]) -> str:
    """The outcome table: one row per (variant, kind)."""
    rows: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        rows.setdefault((o.point.variant, o.point.kind), []).append(o)
    head = (
        f"{'variant':<10} {'point':<7} {'points':>6} {'crashed':>7} {'shown crashed':>13} "
        f"{'paused':>6} {'skip':>4} {'retry':>5} {'roll back':>9} {'twice':>5} {'bad':>3}  "
        "final states"
    )
    lines = [head, "-" * len(head)]
    counts: dict[str, int] = {}
    for (variant, kind), group in sorted(rows.items(), key=lambda kv: _order(kv[0])):
        finals: dict[str, int] = {}
        for o in group:
            finals[o.final] = finals.get(o.final, 0) + 1
        fin = ", ".join(f"{k} {v}" for k, v in sorted(finals.items()))
        paused = sum(1 for o in group if o.pauses)
        skip = sum(a == "--skip-step" for o in group for a in o.answers)
        retry = sum(a == "--retry-step" for o in group for a in o.answers)
        back = sum(a == "--rollback" for o in group for a in o.answers)
        shown = sum(o.shown == "crashed" for o in group)
        lines.append(
            f"{variant:<10} {kind:<7} {len(group):>6} {sum(o.crashed for o in group):>7} "
            f"{shown:>13} {paused:>6} {skip:>4} {retry:>5} {back:>9} "
            f"{sum(bool(o.double) for o in group):>5} {sum(not o.ok for o in group):>3}  {fin}"
        )
        for k, v in (("points", len(group)), ("bad", sum(not o.ok for o in group))):
            counts[k] = counts.get(k, 0) + v
        counts["twice"] = counts.get("twice", 0) + sum(bool(o.double) for o in group)
    lines.append(
        f"total: {counts.get('points', 0)} points, {counts.get('twice', 0)} with an action "
        f"applied twice, {counts.get('bad', 0)} with any problem"
    )
    return "\n".join(lines)


def _order(key: tuple[str, str]) -> tuple[int, int]:
    return (VARIANTS.index(key[0]), KINDS.index(key[1]))


def sample(counts: dict[str, dict[str, int]], per_kind: int) -> list[Point]:
    """Up to ``per_kind`` points per (variant, kind), spread evenly over its range."""
    points: list[Point] = []
    for variant, by_kind in counts.items():
        for kind, n in by_kind.items():
            if n <= 0:
                continue
            take = min(per_kind, n)
            picks = sorted({1 + round(i * (n - 1) / max(take - 1, 1)) for i in range(take)})
            points += [Point(variant, kind, p) for p in picks]
    return points
