"""Run one check (resolve ``use:``, measure with its provider, judge): shared by the engine,
`tminus health` and, later, the watch."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tminus.plan.checks import CheckBase, CheckUse
from tminus.plan.durations import resolve_durations
from tminus.plan.interpolate import ResolveError, Resolver
from tminus.plan.model import Plan
from tminus.plan.walk import resolve_check
from tminus.sources.base import (
    CheckContext,
    CheckResult,
    check_name,
    get_source,
    judge,
    resolve_conditions,
)

__all__ = ["DEFAULT_CHECK_TIMEOUT_S", "run_check"]

DEFAULT_CHECK_TIMEOUT_S = 120.0


def _default_timeout(check: CheckBase) -> float:
    """120 s, or longer for a source that measures over a window (a probe's ``duration``)."""
    window = getattr(check, "duration", None) or (
        check.interval if getattr(check, "source", "") == "probe" else None
    )
    if window is None:
        return DEFAULT_CHECK_TIMEOUT_S
    return max(DEFAULT_CHECK_TIMEOUT_S, window.total_seconds() + 30.0)


async def run_check(
    plan: Plan, resolver: Resolver, state_dir: Path, ref: CheckBase | CheckUse
) -> CheckResult:
    """Measure and judge one check; never raises for a failing source."""
    check = resolve_check(plan, ref)
    if check is None:
        name = ref.use if isinstance(ref, CheckUse) else "check"
        return CheckResult(name, "error", "critical", None, f"check '{name}' is not defined")
    try:  # `interval: ${every}` (a probe's default duration) is read with the deploy's values
        check = resolve_durations(check, resolver)
    except ValueError as exc:  # ResolveError included
        message = resolver.mask(f"a duration does not resolve: {exc}")
        return CheckResult(check_name(check), "error", "critical", None, message)
    provider = get_source(str(getattr(check, "source", "")))
    ctx = CheckContext(plan, resolver, state_dir)
    try:  # `expect: contains "${release}"`: conditions are read with the deploy's values
        conditions = resolve_conditions(check, resolver)
    except (ResolveError, ValueError) as exc:
        message = resolver.mask(f"a condition does not resolve: {exc}")
        return CheckResult(check_name(check), "error", "critical", None, message)
    timeout = check.timeout.total_seconds() if check.timeout else _default_timeout(check)
    try:
        m = await asyncio.wait_for(provider.measure(check, ctx), timeout)
    except TimeoutError:
        return CheckResult(
            check_name(check), "error", "critical", None, f"timed out after {timeout:g}s"
        )
    m.conditions = conditions
    result = judge(check, m)
    result.message = resolver.mask(result.message)
    return result
