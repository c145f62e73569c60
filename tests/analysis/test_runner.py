"""The analysis runner's Argo semantics, with measure functions written here: the runner's
input is a function from a check to a result, so these are its real inputs, not mocks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tminus.analysis.runner import AnalysisResult, run_analysis
from tminus.plan.checks import CheckBase, CommandCheck
from tminus.sources.base import CheckResult, Level, Status, check_name


def chk(name: str, **fields: Any) -> CheckBase:
    return CommandCheck(source="command", command="true", name=name, **fields)


Script = dict[str, list[tuple[Status, Level]]]  # check name -> (status, level) per measurement


def scripted(
    script: Script, delay: float = 0.0
) -> tuple[Callable[[CheckBase], Awaitable[CheckResult]], dict[str, list[float]]]:
    """A measure function playing ``script``; the last entry repeats. Records start times."""
    started: dict[str, list[float]] = {}

    async def measure(check: CheckBase) -> CheckResult:
        name = check_name(check)
        calls = started.setdefault(name, [])
        calls.append(time.monotonic())
        steps = script[name]
        status, level = steps[min(len(calls), len(steps)) - 1]
        if delay:
            await asyncio.sleep(delay)
        value = None if status == "inconclusive" else len(calls)
        return CheckResult(name, status, level, value, f"{name} #{len(calls)}: {status}/{level}")

    return measure, started


def run(coro: Awaitable[AnalysisResult]) -> AnalysisResult:
    return asyncio.run(coro)  # type: ignore[arg-type]


OK: tuple[Status, Level] = ("passed", "ok")
WARN: tuple[Status, Level] = ("passed", "warn")
FAIL: tuple[Status, Level] = ("failed", "critical")
NODATA: tuple[Status, Level] = ("inconclusive", "ok")
ERR: tuple[Status, Level] = ("error", "critical")


def test_one_measurement_each_without_window_or_count() -> None:
    measure, started = scripted({"a": [OK], "b": [OK]})
    res = run(run_analysis([chk("a"), chk("b")], measure, duration=None))
    assert res.status == "successful" and res.level == "ok" and res.detected_at is None
    assert {k: len(v) for k, v in started.items()} == {"a": 1, "b": 1}
    assert [m["check"] for m in res.measurements] == ["a", "b"]
    assert set(res.measurements[0]) == {"check", "status", "level", "value", "message", "at"}


def test_count_and_interval_start_to_start() -> None:
    measure, started = scripted({"a": [OK]}, delay=0.05)
    t0 = time.monotonic()
    res = run(run_analysis([chk("a", interval="0.2s", count=4)], measure, duration=None))
    assert res.status == "successful"
    gaps = [b - a for a, b in zip(started["a"], started["a"][1:], strict=False)]
    assert len(started["a"]) == 4
    assert all(0.17 < g < 0.5 for g in gaps), gaps  # start to start, not end to start
    assert time.monotonic() - t0 < 2.0


def test_failure_limit_zero_fails_on_the_first_failure_and_returns_at_once() -> None:
    # 'slow' is in the middle of a long measurement when 'bad' fails: it is cancelled.
    cancelled = asyncio.Event()

    async def measure(check: CheckBase) -> CheckResult:
        if check.name == "slow":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return CheckResult(check_name(check), "failed", "critical", 0.2, "0.2 is CRITICAL")

    async def main() -> tuple[AnalysisResult, float, bool]:
        t0 = time.monotonic()
        res = await run_analysis([chk("slow"), chk("bad", interval="0.1s")], measure, duration=60)
        return res, time.monotonic() - t0, cancelled.is_set()

    res, took, was_cancelled = asyncio.run(main())
    assert res.status == "failed" and res.level == "critical"
    assert took < 0.5 and was_cancelled
    assert res.detected_at is not None and abs(res.detected_at - time.time()) < 5
    assert "failure_limit 0" in res.message and "'bad'" in res.message


def test_failure_limit_tolerates_that_many_failures() -> None:
    measure, started = scripted({"a": [OK, FAIL, OK, FAIL, OK, FAIL]})
    res = run(
        run_analysis(
            [chk("a", interval="0.01s", count=10, failure_limit=2)], measure, duration=None
        )
    )
    assert res.status == "failed"
    assert len(started["a"]) == 6  # the third failure exceeds the limit of 2
    measure, started = scripted({"a": [OK, FAIL, OK, FAIL, OK]})
    res = run(
        run_analysis([chk("a", interval="0.01s", count=5, failure_limit=2)], measure, duration=None)
    )
    assert res.status == "successful"


def test_critical_level_counts_as_failed_and_warn_notifies_but_passes() -> None:
    measure, _ = scripted({"a": [("passed", "critical")]})
    assert run(run_analysis([chk("a")], measure, duration=None)).status == "failed"
    warned: list[str] = []

    async def on_warn(result: CheckResult) -> None:
        warned.append(result.message)

    measure, _ = scripted({"a": [WARN, OK, WARN]})
    res = run(
        run_analysis([chk("a", interval="0.01s", count=3)], measure, duration=None, on_warn=on_warn)
    )
    assert res.status == "successful" and res.level == "warn"
    assert warned == ["a #1: passed/warn", "a #3: passed/warn"]


def test_inconclusive_limit() -> None:
    measure, _ = scripted({"a": [NODATA]})
    res = run(run_analysis([chk("a")], measure, duration=None))
    assert res.status == "inconclusive"  # default limit 0: the first no-data pauses
    measure, started = scripted({"a": [NODATA, OK, NODATA, OK]})
    res = run(
        run_analysis(
            [chk("a", interval="0.01s", count=4, inconclusive_limit=2)], measure, duration=None
        )
    )
    assert res.status == "successful" and len(started["a"]) == 4


def test_consecutive_error_limit_default_four_and_reset_by_success() -> None:
    measure, started = scripted({"a": [ERR]})
    res = run(run_analysis([chk("a", interval="0.01s", count=20)], measure, duration=None))
    assert res.status == "error" and len(started["a"]) == 5  # 5 > 4
    measure, started = scripted({"a": [ERR, ERR, ERR, ERR, OK, ERR, ERR, ERR, ERR, OK]})
    res = run(run_analysis([chk("a", interval="0.01s", count=10)], measure, duration=None))
    assert res.status == "successful"
    measure, started = scripted({"a": [ERR, ERR]})
    res = run(
        run_analysis(
            [chk("a", interval="0.01s", count=5, consecutive_error_limit=1)],
            measure,
            duration=None,
        )
    )
    assert res.status == "error" and len(started["a"]) == 2


def test_window_without_count_measures_until_it_ends() -> None:
    measure, started = scripted({"a": [OK], "b": [OK]})
    t0 = time.monotonic()
    res = run(
        run_analysis(
            [chk("a", interval="0.1s"), chk("b", interval="0.25s", count=2)],
            measure,
            duration=0.55,
        )
    )
    took = time.monotonic() - t0
    assert res.status == "successful"
    assert 4 <= len(started["a"]) <= 6 and len(started["b"]) == 2
    assert 0.4 < took < 1.5


def test_no_passed_measurement_is_inconclusive_never_successful() -> None:
    # errors within the limit, then the window ends: no data to promote on
    measure, _ = scripted({"a": [ERR], "b": [OK]})
    res = run(run_analysis([chk("a", interval="0.1s"), chk("b")], measure, duration=0.25))
    assert res.status == "inconclusive" and res.message.endswith("passed measurement of: a")
    assert res.level == "warn"


def test_stop_event_ends_early() -> None:
    async def main() -> tuple[AnalysisResult, float]:
        stop = asyncio.Event()
        measure, _ = scripted({"a": [OK]})
        asyncio.get_running_loop().call_later(0.3, stop.set)
        t0 = time.monotonic()
        res = await run_analysis([chk("a", interval="0.1s")], measure, duration=60, stop=stop)
        return res, time.monotonic() - t0

    res, took = asyncio.run(main())
    assert res.status == "successful" and "stopped" in res.message
    assert took < 0.6

    async def nothing_yet() -> AnalysisResult:
        stop = asyncio.Event()
        stop.set()
        measure, _ = scripted({"a": [OK]}, delay=1.0)
        return await run_analysis([chk("a")], measure, duration=60, stop=stop)

    assert asyncio.run(nothing_yet()).status == "inconclusive"


def test_a_provider_that_raises_is_an_error_measurement() -> None:
    async def measure(check: CheckBase) -> CheckResult:
        raise RuntimeError("boom")

    res = run(run_analysis([chk("a", consecutive_error_limit=0)], measure, duration=None))
    assert res.status == "error" and "RuntimeError: boom" in res.message


@pytest.mark.parametrize("limit", [0, 1])
def test_decision_is_within_the_same_second_as_the_bad_measurement(limit: int) -> None:
    measure, started = scripted({"a": [OK, OK, FAIL, FAIL]})

    async def main() -> AnalysisResult:
        return await run_analysis(
            [chk("a", interval="0.05s", failure_limit=limit)], measure, duration=30
        )

    res = asyncio.run(main())
    assert res.status == "failed"
    assert len(started["a"]) == 3 + limit
    bad_at = res.measurements[-1]["at"]
    assert res.detected_at is not None and 0 <= res.detected_at - bad_at < 0.1


def test_no_checks_is_inconclusive_at_once() -> None:
    async def main() -> AnalysisResult:
        measure, _ = scripted({})
        return await run_analysis([], measure, duration=60, stop=asyncio.Event())

    res = asyncio.run(asyncio.wait_for(main(), 2))
    assert res.status == "inconclusive" and res.measurements == []


def test_errors_at_the_end_of_the_window_never_succeed() -> None:
    """A source that passes, then errs in the last measurements of the window (2 errors,
    under ``consecutive_error_limit`` 4): error, not successful. Mutation tried: the end of
    ``run_analysis`` without the latest-measurement / final-interval rule: successful."""
    measure, started = scripted({"a": [OK, OK, OK, OK, ERR, ERR, ERR, ERR, ERR, ERR]})
    res = run(run_analysis([chk("a", interval="0.1s")], measure, duration=0.55))
    assert 5 <= len(started["a"]) <= 7
    assert res.status == "error" and "final interval" in res.message, res


def test_no_data_or_a_failure_as_the_latest_measurement_never_succeeds() -> None:
    measure, _ = scripted({"a": [OK, OK, NODATA]})
    res = run(
        run_analysis(
            [chk("a", interval="0.01s", count=3, inconclusive_limit=5)], measure, duration=None
        )
    )
    assert res.status == "inconclusive" and res.level == "warn", res
    measure, _ = scripted({"a": [OK, OK, FAIL]})
    res = run(
        run_analysis([chk("a", interval="0.01s", count=3, failure_limit=2)], measure, duration=None)
    )
    assert res.status == "inconclusive", res  # within the limit: no rollback, no promotion
