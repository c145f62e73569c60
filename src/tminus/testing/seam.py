"""The testing seam: ``python -m tminus.testing.seam ARGS…`` is ``tminus ARGS…`` with the test
hooks a test asked for installed first.

Production code never reads these variables (``python -m tminus`` and the ``tminus`` script
ignore them); only this entry point does, and installs the one clock (:mod:`tminus.clock`) and
the fault plan (:mod:`tminus.faults`) before the CLI starts:

- ``TMINUS_CLOCK_OFFSET=S``: the clock runs S seconds ahead (an :class:`~tminus.clock.OffsetClock`),
  for tests of delays, windows and due times;
- ``TMINUS_CRASH_AFTER_COMMITS=N``, ``TMINUS_CRASH_AFTER_SPAWNS=N``,
  ``TMINUS_CRASH_AFTER_EFFECTS=N``: kill the process at that fault point;
- ``TMINUS_CRASH_REPORT=PATH``: the crash's JSON line; ``TMINUS_FAULT_COUNTS=PATH``: the points
  passed, written at exit.

In-process tests call :func:`tminus.clock.install` and :func:`tminus.faults.install` themselves.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from tminus import clock, faults

__all__ = ["install_from_env", "main"]

#: The variables this seam reads (a test harness that clears them uses this list).
VARIABLES = (
    "TMINUS_CLOCK_OFFSET",
    "TMINUS_CRASH_AFTER_COMMITS",
    "TMINUS_CRASH_AFTER_SPAWNS",
    "TMINUS_CRASH_AFTER_EFFECTS",
    "TMINUS_CRASH_REPORT",
    "TMINUS_FAULT_COUNTS",
)


def _int(name: str) -> int:
    return int(os.environ.get(name, "0") or 0)


def _path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def install_from_env() -> None:
    offset = os.environ.get("TMINUS_CLOCK_OFFSET")
    if offset:
        clock.install(clock.OffsetClock(timedelta(seconds=float(offset))))
    plan = faults.FaultPlan(
        after_commits=_int("TMINUS_CRASH_AFTER_COMMITS"),
        after_spawns=_int("TMINUS_CRASH_AFTER_SPAWNS"),
        after_effects=_int("TMINUS_CRASH_AFTER_EFFECTS"),
        report=_path("TMINUS_CRASH_REPORT"),
        counts=_path("TMINUS_FAULT_COUNTS"),
    )
    if plan != faults.FaultPlan():
        faults.install(plan)


def main() -> None:
    install_from_env()
    from tminus.cli.app import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
