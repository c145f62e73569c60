"""What is durable when, on a PostgreSQL store, through a crash of the database server itself
(not only of the runner): the start of a step that may not run twice is flushed before its
effect; its end is committed without waiting for the flush (docs/architecture.md, "What is
durable when"). Losing that end must leave the step in flight, so the resume pauses and asks,
never runs it again.

The runner is killed (SIGKILL, ``TMINUS_CRASH_AFTER_COMMITS``) right after the commit of the
first step's end, then the private PostgreSQL server holding the state is crashed too (its WAL
writer frozen since before the run, so only flushed commits reached the disk: see
tests/store/_crashable_pg.py) and started again: a machine running both that lost power. The
test checks that the end was really lost, then resumes as an operator.

Mutation tried: the start of a non-rerun-safe step unflushed too (``flush_start = False`` in
``engine.attempt.execute``): the start is lost with the end, the resume runs the step again
and the ledger shows ``fwd:one`` twice. (A runner heartbeat, a flushed commit every 2 s, that
falls between the step's start and its end flushes the start anyway, and the mutation goes
unseen: the first heartbeat comes during the first step, so the step crashed is the second,
an ``echo``, whose window is short.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.store._crashable_pg import crash, crashable_pg, freeze_wal_writer, fresh_db
from tminus.store.store import Store
from tminus.testing.pgreplica import PgPrimary
from tminus.testing.seam import VARIABLES

PLAN = """
name: durable
environment: test
phases:
  - name: only
    steps:
      - {{kind: run, name: zero, command: "echo fwd:zero >> {work}/ledger"}}
      - {{kind: run, name: one, command: "echo fwd:one >> {work}/ledger"}}
      - {{kind: run, name: two, command: "echo fwd:two >> {work}/ledger"}}
"""


def _tm(work: Path, state: str, *args: str, env: dict[str, str] | None = None) -> Any:
    base = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    base.update({"TMINUS_STATE": state, "TMINUS_OPERATOR": "alice", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "tminus.testing.seam", *args],
        cwd=work,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _deploy_id(work: Path, state: str) -> str:
    proc = _tm(work, state, "list", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout)[0]["id"])


def _status(work: Path, state: str, deploy: str) -> dict[str, Any]:
    proc = _tm(work, state, "status", deploy, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def _fresh(work: Path, pg: PgPrimary) -> tuple[Path, str]:
    work.mkdir()
    (work / "plan.yaml").write_text(PLAN.format(work=work))
    return work, fresh_db(pg, f"state_{uuid.uuid4().hex[:8]}")


def _crash_at(work: Path, kind: str, n: int) -> dict[str, str]:
    return {f"TMINUS_CRASH_AFTER_{kind}": str(n), "TMINUS_CRASH_REPORT": str(work / "crash")}


def _report(work: Path) -> dict[str, Any]:
    return dict(json.loads((work / "crash").read_text().splitlines()[-1]))


@pytest.mark.timeout(600)
def test_a_lost_step_end_pauses_and_never_reruns_the_step(tmp_path: Path) -> None:
    with crashable_pg() as pg:
        # The commit of step one's end: the next counted commit after its effect (a probe
        # run crashes at that effect and reports how many commits it had passed). Step one
        # is the second: the runner's first heartbeat (a flushed commit) comes during the
        # first step and would flush what came before it.
        probe = _fresh(tmp_path / "probe", pg)
        proc = _tm(*probe, "run", "plan.yaml", env=_crash_at(probe[0], "EFFECTS", 2))
        assert proc.returncode == -9, proc.stdout + proc.stderr
        end_commit = _report(probe[0])["counts"]["commits"] + 1
        work, state = _fresh(tmp_path / "run", pg)
        frozen = freeze_wal_writer(pg)  # from here only flushed commits write the WAL
        proc = _tm(work, state, "run", "plan.yaml", env=_crash_at(work, "COMMITS", end_commit))
        assert proc.returncode == -9, proc.stdout + proc.stderr
        last = _report(work)
        assert last["effect_done"] and last["effect_ok"], last  # one's end was committed
        assert (work / "ledger").read_text().split() == ["fwd:zero", "fwd:one"]

        crash(pg, frozen)  # the database server goes down: what was not flushed is lost

        deploy = _deploy_id(work, state)
        store = Store(state)
        try:
            rows = {r["title"]: r for r in store.step_rows(deploy).values()}
        finally:
            store.close()
        # the start kept, the end lost
        assert rows.get("one", {}).get("state") == "running", rows

        proc = _tm(work, state, "resume", deploy)
        info = _status(work, state, deploy)
        assert info["state"] == "paused", (proc.stdout, proc.stderr, info)
        assert "one" in (info.get("reason") or ""), info
        assert (work / "ledger").read_text().split() == ["fwd:zero", "fwd:one"]  # not again

        # the operator checked: it ran, and well
        proc = _tm(work, state, "resume", deploy, "--skip-step")
        assert _status(work, state, deploy)["state"] == "succeeded", (proc.stdout, proc.stderr)
        assert (work / "ledger").read_text().split() == ["fwd:zero", "fwd:one", "fwd:two"]
