"""The testing seam: ``python -m tminus.testing.seam ARGS…`` is ``tminus ARGS…`` with the test
hooks a test asked for installed first.

Production code never reads these variables (``python -m tminus`` and the ``tminus`` script
ignore them); only this entry point does, and installs the one clock (:mod:`tminus.clock`) and
the fault plan (:mod:`tminus.faults`) before the CLI starts:

- ``TMINUS_CLOCK_OFFSET=S``: the clock runs S seconds ahead (an :class:`~tminus.clock.OffsetClock`),
  for tests of delays, windows and due times;
- ``TMINUS_CLOCK_FILE=PATH``: the clock runs as many seconds ahead as PATH says, read again
  whenever the file changes (:class:`FileOffsetClock`): a test travels in time while a
  ``tminus serve`` runs, and the workers it starts (through this seam too) travel with it;
- ``TMINUS_CRASH_AFTER_COMMITS=N``, ``TMINUS_CRASH_AFTER_SPAWNS=N``,
  ``TMINUS_CRASH_AFTER_EFFECTS=N``: kill the process at that fault point;
- ``TMINUS_CRASH_REPORT=PATH``: the crash's JSON line; ``TMINUS_FAULT_COUNTS=PATH``: the points
  passed, written at exit.

In-process tests call :func:`tminus.clock.install` and :func:`tminus.faults.install` themselves.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tminus import clock, faults

__all__ = ["FileOffsetClock", "install_from_env", "main", "travel"]


class FileOffsetClock:
    """The machine's clock plus the offset (seconds) written in ``path``; the file is read
    again when its modification time changes (write it with :func:`travel`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: int | None = None
        self._offset = timedelta()

    def now(self) -> datetime:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            text = self.path.read_text().strip() if stamp is not None else ""
            self._offset = timedelta(seconds=float(text or 0))
        return datetime.now(UTC) + self._offset


def travel(path: Path, offset: timedelta) -> None:
    """Set the offset of every :class:`FileOffsetClock` on ``path`` (atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(repr(offset.total_seconds()))
    os.replace(tmp, path)


#: The variables this seam reads (a test harness that clears them uses this list).
VARIABLES = (
    "TMINUS_CLOCK_OFFSET",
    "TMINUS_CLOCK_FILE",
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
    clock_file = os.environ.get("TMINUS_CLOCK_FILE")
    if clock_file:
        clock.install(FileOffsetClock(Path(clock_file)))
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
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        # The server's workers go through this seam too, so they share the test's clock.
        from tminus.serve import workers

        workers.WORKER_ARGV[:] = [sys.executable, "-m", "tminus.testing.seam"]
        workers.WARM_ARGV[:] = [sys.executable, "-m", "tminus.testing.seam", "--warm"]
    from tminus.cli.app import main as cli_main

    if len(sys.argv) > 1 and sys.argv[1] == "--warm":  # a warm worker of a server (above)
        from tminus.cli.warm import serve_one

        serve_one(cli_main)
        return

    cli_main()


if __name__ == "__main__":
    main()
