"""Test hooks live behind an explicit testing seam (issue #14 item 7).

The clock (``tminus.clock``) and the fault points (``tminus.faults``) are armed only by
``python -m tminus.testing.seam`` (or by an in-process test calling ``install``); the real
entry points (``python -m tminus``, the ``tminus`` script) ignore the variables the seam reads.

Mutations tried: the store stamping rows with ``datetime.now(UTC)`` instead of
``tminus.clock.now`` → ``test_an_installed_clock_is_the_stores_clock`` fails; ``store.py``
reading ``TMINUS_CLOCK_OFFSET`` again →
``test_no_production_module_reads_the_test_variables`` and
``test_the_real_cli_ignores_the_test_variables`` fail; ``faults.after_commit`` crashing without an
installed plan (reading the environment) → ``test_the_real_cli_ignores_the_test_variables`` fails
(exit -9); the seam not installing the fault plan → ``test_the_seam_arms_the_faults`` fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import tminus
from tminus import clock
from tminus.testing.seam import VARIABLES

PLAN = """
name: seam
environment: test
phases:
  - name: only
    steps: [{kind: run, name: touch, command: "touch done.txt"}]
"""


def _run(tmp: Path, module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp / "p.yaml").write_text(PLAN)
    base = {k: v for k, v in os.environ.items() if k not in VARIABLES and k != "TMINUS_STATE"}
    return subprocess.run(
        [sys.executable, "-m", module, "run", "p.yaml", "-q"],
        cwd=tmp,
        env={**base, "TMINUS_OPERATOR": "alice", **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_no_production_module_reads_the_test_variables() -> None:
    src = Path(tminus.__file__).parent
    readers = sorted(
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if p.parent.name != "testing" and any(v in p.read_text() for v in VARIABLES)
    )
    assert readers == []


def test_the_real_cli_ignores_the_test_variables(tmp_path: Path) -> None:
    counts = tmp_path / "counts.json"
    proc = _run(
        tmp_path,
        "tminus",
        {"TMINUS_CRASH_AFTER_COMMITS": "1", "TMINUS_FAULT_COUNTS": str(counts)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "done.txt").exists()
    assert not counts.exists()


def test_the_seam_arms_the_faults(tmp_path: Path) -> None:
    proc = _run(tmp_path, "tminus.testing.seam", {"TMINUS_CRASH_AFTER_COMMITS": "1"})
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert not (tmp_path / "done.txt").exists()


def test_the_seam_counts_the_points(tmp_path: Path) -> None:
    counts = tmp_path / "counts.json"
    proc = _run(tmp_path, "tminus.testing.seam", {"TMINUS_FAULT_COUNTS": str(counts)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(counts.read_text())["commits"] > 0


def test_an_installed_clock_is_the_stores_clock(tmp_path: Path) -> None:
    """What the store records is stamped by the installed clock (a deploy created while the
    clock runs 30 days ahead is dated 30 days ahead), and by the system's once it is back."""
    from tminus.store.store import Store

    store = Store(f"sqlite:///{tmp_path}/state.db")
    fields = {
        "environment": "test",
        "plan_path": "p.yaml",
        "plan_text": PLAN,
        "plan_hash": "h",
        "started_by": "alice",
        "overrides": {},
    }
    previous = clock.install(clock.OffsetClock(timedelta(days=30)))
    try:
        ahead = store.deploy(store.create_deploy(plan_name="ahead", **fields))
    finally:
        clock.install(previous)
    today = store.deploy(store.create_deploy(plan_name="today", **fields))
    assert ahead["created_at"] - datetime.now(UTC) > timedelta(days=29)
    assert abs(today["created_at"] - datetime.now(UTC)) < timedelta(minutes=1)
