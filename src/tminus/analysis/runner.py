"""The analysis runner: measure checks on a schedule and decide, with Argo Rollouts' semantics.

Every check runs concurrently in its own loop: a measurement every ``interval`` (default
:data:`DEFAULT_INTERVAL_S`, start to start), up to ``count`` measurements (None: until the
window ends). After each measurement its check's counters are compared with its limits:

- ``failure_limit`` (default 0): the analysis FAILS when failed measurements exceed it. A
  measurement judged CRITICAL counts as failed.
- ``inconclusive_limit`` (default 0): INCONCLUSIVE when inconclusive measurements (no data)
  exceed it.
- ``consecutive_error_limit`` (default 4): ERROR when errors in a row (the source could not
  be measured) exceed it; any other result resets the run of errors.

The runner returns as soon as one limit is exceeded, cancelling the other checks' in-flight
measurements, so that a canary can be rolled back within the same second. A WARN result calls
``on_warn`` and counts as passed. When every check is done (its count reached, or the window
over) the analysis is successful only if every check's **latest** measurement passed and no
check had an error or no data in the **final interval** (its own ``interval`` before the end):
otherwise it is inconclusive (or error, when the source could not be measured), so an analysis
never promotes on missing data, even data that went missing in the last seconds of a hold
with too few errors to exceed a limit. docs/analysis.md has the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tminus.plan.checks import CheckBase
from tminus.sources.base import CheckResult, check_name

__all__ = [
    "DEFAULT_CONSECUTIVE_ERROR_LIMIT",
    "DEFAULT_FAILURE_LIMIT",
    "DEFAULT_INCONCLUSIVE_LIMIT",
    "DEFAULT_INTERVAL_S",
    "AnalysisResult",
    "run_analysis",
]

DEFAULT_INTERVAL_S = 5.0
DEFAULT_FAILURE_LIMIT = 0
DEFAULT_INCONCLUSIVE_LIMIT = 0
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4  # Argo Rollouts' DefaultConsecutiveErrorLimit

AnalysisStatus = Literal["successful", "failed", "inconclusive", "error"]
AnalysisLevel = Literal["ok", "warn", "critical"]
_Outcome = Literal["passed", "failed", "inconclusive", "error"]


@dataclass
class AnalysisResult:
    status: AnalysisStatus
    level: AnalysisLevel
    message: str
    detected_at: float | None  # time.time() when the decision was made (None when successful)
    measurements: list[dict[str, Any]]  # check, status, level, value, message, at


@dataclass
class _Tally:
    """One check's counters (Argo's MetricResult)."""

    check: CheckBase
    name: str
    interval: float
    count: int | None
    failure_limit: int
    inconclusive_limit: int
    consecutive_error_limit: int
    passed: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    measured: int = 0
    last_message: str = ""
    warned: bool = False
    last_outcome: _Outcome | None = None
    last_slot: float = 0.0
    #: (scheduled slot, outcome, message) of the latest error or no-data measurement
    last_missing: tuple[float, _Outcome, str] | None = None

    def record(self, outcome: _Outcome, message: str, at: float = 0.0) -> None:
        self.measured += 1
        self.last_message = message
        self.last_outcome = outcome
        self.last_slot = at
        if outcome in ("error", "inconclusive"):
            self.last_missing = (at, outcome, message)
        if outcome == "error":
            self.errors += 1
            self.consecutive_errors += 1
            return
        self.consecutive_errors = 0
        if outcome == "passed":
            self.passed += 1
        elif outcome == "failed":
            self.failed += 1
        else:
            self.inconclusive += 1

    def exceeded(self) -> tuple[AnalysisStatus, str] | None:
        """The limit this check has exceeded, if any (checked in Argo's order)."""
        if self.failed > self.failure_limit:
            return "failed", (
                f"check '{self.name}' failed {self.failed} time(s), more than its "
                f"failure_limit {self.failure_limit}: {self.last_message}"
            )
        if self.inconclusive > self.inconclusive_limit:
            return "inconclusive", (
                f"check '{self.name}' was inconclusive {self.inconclusive} time(s), more than "
                f"its inconclusive_limit {self.inconclusive_limit}: {self.last_message}"
            )
        if self.consecutive_errors > self.consecutive_error_limit:
            return "error", (
                f"check '{self.name}' errored {self.consecutive_errors} time(s) in a row, more "
                f"than its consecutive_error_limit {self.consecutive_error_limit}: "
                f"{self.last_message}"
            )
        return None


def _outcome(result: CheckResult) -> _Outcome:
    if result.status == "error":
        return "error"
    if result.status == "inconclusive":
        return "inconclusive"
    if result.status == "failed" or result.level == "critical":
        return "failed"
    return "passed"


def _tally(check: CheckBase, duration: float | None) -> _Tally:
    interval = check.interval.total_seconds() if check.interval else DEFAULT_INTERVAL_S
    count = check.count
    if count is None and duration is None:
        count = 1  # no window and no count: measure once
    return _Tally(
        check=check,
        name=check_name(check),
        interval=max(interval, 0.0),
        count=count,
        failure_limit=(
            check.failure_limit if check.failure_limit is not None else DEFAULT_FAILURE_LIMIT
        ),
        inconclusive_limit=(
            check.inconclusive_limit
            if check.inconclusive_limit is not None
            else DEFAULT_INCONCLUSIVE_LIMIT
        ),
        consecutive_error_limit=(
            check.consecutive_error_limit
            if check.consecutive_error_limit is not None
            else DEFAULT_CONSECUTIVE_ERROR_LIMIT
        ),
    )


async def run_analysis(
    checks: Sequence[CheckBase],
    measure: Callable[[CheckBase], Awaitable[CheckResult]],
    *,
    duration: float | None,
    stop: asyncio.Event | None = None,
    on_warn: Callable[[CheckResult], Awaitable[None]] | None = None,
    on_measure: Callable[[dict[str, Any]], None] | None = None,
) -> AnalysisResult:
    """Measure ``checks`` concurrently and decide; returns as soon as a limit is exceeded.

    ``duration`` is the window in seconds (no measurement starts after it; one in flight is
    awaited); None means until every check has reached its ``count`` (a check with neither
    is measured once). Setting ``stop`` ends the analysis at once: in-flight measurements are
    cancelled and the measurements so far decide (successful only if every check has passed
    at least once and no limit was exceeded).

    ``on_measure`` is told of each measurement (the dict kept in ``measurements``) that did
    not end the analysis; the one that did (a limit exceeded) is marked ``"decided": True``
    in ``measurements`` and left for the caller to tell after it has acted on the verdict
    (recording an event must not stand between a failing canary and its rollback).
    """
    if not checks:
        return AnalysisResult("inconclusive", "warn", "no checks to measure", time.time(), [])
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = None if duration is None else started + max(duration, 0.0)
    tallies = [_tally(c, duration) for c in checks]
    log: list[dict[str, Any]] = []
    verdict: asyncio.Future[tuple[AnalysisStatus, str, float]] = loop.create_future()

    async def one(t: _Tally) -> None:
        due = started
        while t.count is None or t.measured < t.count:
            if deadline is not None and due >= deadline and t.measured > 0:
                return
            await asyncio.sleep(max(0.0, due - loop.time()))  # yields even when due
            slot = due  # the measurement's scheduled start: slots are >= one interval apart
            try:
                result = await measure(t.check)
            except Exception as exc:  # a provider bug must not crash the analysis
                result = CheckResult(
                    t.name, "error", "critical", None, f"{type(exc).__name__}: {exc}"
                )
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                # Python 3.11's asyncio.wait_for (run_check's timeout) can return a result when
                # the measurement ends just as this task is cancelled, swallowing the cancel:
                # honour it, else the loop would sleep out the check's interval.
                raise asyncio.CancelledError
            # start to start; a measurement longer than the interval delays the next one
            due = max(due + t.interval, loop.time())
            outcome = _outcome(result)
            entry = {
                "check": t.name,
                "status": outcome,
                "level": result.level,
                "value": result.value,
                "message": result.message,
                "at": time.time(),
            }
            log.append(entry)
            if outcome == "passed" and result.level == "warn":
                t.warned = True
                if on_warn is not None:
                    await on_warn(result)
            t.record(outcome, result.message, slot)
            exceeded = t.exceeded()
            if exceeded is not None:
                entry["decided"] = True
                if not verdict.done():
                    verdict.set_result((exceeded[0], exceeded[1], time.time()))
                return
            if on_measure is not None:
                on_measure(entry)

    tasks = [asyncio.create_task(one(t), name=f"analysis:{t.name}") for t in tallies]
    all_done: asyncio.Future[list[Any]] = asyncio.gather(*tasks, return_exceptions=True)
    waiters: set[asyncio.Future[Any]] = {verdict, all_done}
    stop_task: asyncio.Task[bool] | None = None
    if stop is not None:
        stop_task = asyncio.create_task(stop.wait())
        waiters.add(stop_task)
    stopped = False
    try:
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        stopped = stop_task is not None and stop_task in done and not verdict.done()
    finally:
        for task in tasks:
            task.cancel()
        if stop_task is not None:
            stop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stop_task
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await all_done
    for task in tasks:  # an exception from on_warn, or a bug in the loop: surface it
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            raise exc

    if verdict.done():
        status, message, at = verdict.result()
        level: AnalysisLevel = "warn" if status == "inconclusive" else "critical"
        return AnalysisResult(status, level, message, at, log)
    unmeasured = [t.name for t in tallies if t.passed == 0]
    if unmeasured:
        why = "stopped before" if stopped else "ended without"
        return AnalysisResult(
            "inconclusive",
            "warn",
            f"analysis {why} a passed measurement of: {', '.join(unmeasured)}",
            time.time(),
            log,
        )
    # Promotion needs each check's latest measurement passed, and no error or missing data in
    # the final interval: a source that died in the last seconds must not promote.
    # The final interval is judged on scheduled slots, not on when measurements happened to
    # run, so that a loaded machine's scheduling delays never change the verdict.
    stale: list[tuple[str, _Outcome, str]] = []
    for t in tallies:
        if t.last_outcome != "passed":
            assert t.last_outcome is not None
            stale.append((t.name, t.last_outcome, t.last_message))
        elif t.last_missing is not None and t.last_missing[0] > t.last_slot - t.interval:
            stale.append((t.name, t.last_missing[1], t.last_missing[2]))
    if stale:
        errored = any(outcome == "error" for _n, outcome, _m in stale)
        shown = "; ".join(f"check '{n}': {o} ({m})" for n, o, m in stale)
        return AnalysisResult(
            "error" if errored else "inconclusive",
            "critical" if errored else "warn",
            f"analysis ended without passing data in its final interval: {shown}",
            time.time(),
            log,
        )
    warned = any(t.warned for t in tallies)
    total = sum(t.measured for t in tallies)
    message = (
        f"{len(tallies)} check(s) passed, {total} measurement(s)"
        + (", with WARN" if warned else "")
        + (" (stopped)" if stopped else "")
    )
    return AnalysisResult("successful", "warn" if warned else "ok", message, None, log)
