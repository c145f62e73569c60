"""The post-deployment watch: one measurement of a period's checks, and what it means.

Each check of the period is run with the deploy's values (the same check runner as verify
and ``tminus health``), and recorded as one ``watch.measurement`` event::

    {"check": NAME, "period": LABEL, "period_index": I, "n": K, "status": STATUS,
     "result": "passed"|"failed"|"inconclusive"|"error", "value": V, "message": TEXT,
     "warn": NUMBER|null, "critical": NUMBER|null, "warn_text": TEXT|null,
     "critical_text": TEXT|null, "at": ISO-8601}

``status`` is ``ok`` (passed), ``warn`` (WARN level), ``critical`` (failed at CRITICAL, or an
error: a watch that cannot measure is not a passing one) or ``inconclusive`` (no data).
What follows a CRITICAL is the plan's ``watch.on_critical``: ``rollback`` rolls the deploy
back (``tminus rollback``, so within its ``rollback_window``; outside it the refusal is
recorded and the watch notifies instead), ``notify`` records a ``watch_critical`` notice.
A WARN records a ``watch_warn`` notice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tminus.clock import now
from tminus.plan.model import Plan

__all__ = ["WatchRound", "measure_round", "threshold", "watch_rows"]


@dataclass
class WatchRound:
    """One measurement of a period: its events and what they call for."""

    events: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    critical: list[str] = field(default_factory=list)
    warn: list[str] = field(default_factory=list)


def threshold(cond: Any) -> tuple[float | None, str | None]:
    """A condition as a number to draw (its operand when numeric) and as text."""
    if cond is None:
        return None, None
    operand = getattr(cond, "operand", None)
    number = float(operand) if isinstance(operand, int | float) else None
    return number, str(cond)


def _status(result: Any) -> str:
    """ok, warn, critical or inconclusive: a check that passed at WARN level is a WARN; one
    that failed or could not measure is CRITICAL."""
    if result.status == "inconclusive":
        return "inconclusive"
    if result.status in ("failed", "error") or result.level == "critical":
        return "critical"
    if result.level == "warn":
        return "warn"
    return "ok"


async def measure_round(
    plan: Plan,
    d: dict[str, Any],
    period: int,
    n: int,
    state_dir: Path,
) -> WatchRound:
    """Run period ``period``'s checks once for deploy row ``d``."""
    from tminus.engine.checking import run_check
    from tminus.engine.prepare import make_resolver
    from tminus.engine.program import split_overrides
    from tminus.plan.walk import resolve_check
    from tminus.sources.base import check_name

    assert plan.watch is not None
    p = plan.watch.schedule[period]
    label = p.label or f"period {period + 1}"
    overrides, _ = split_overrides(d["overrides"])
    resolver = make_resolver(plan, d["plan_path"], d["id"], "tminus-serve", overrides, state_dir)
    out = WatchRound()
    for ref in p.checks:
        check = resolve_check(plan, ref)
        result = await run_check(plan, resolver, state_dir, ref)
        name = check_name(check) if check is not None else result.name
        warn_n, warn_t = threshold(getattr(check, "warn", None))
        crit_n, crit_t = threshold(getattr(check, "critical", None))
        status = _status(result)
        value = result.value if isinstance(result.value, int | float | str) else None
        data = {
            "check": name,
            "period": label,
            "period_index": period,
            "n": n,
            "status": status,
            "result": result.status,
            "value": value,
            "message": resolver.mask(result.message),
            "warn": warn_n,
            "critical": crit_n,
            "warn_text": warn_t,
            "critical_text": crit_t,
            "at": now().isoformat(),
        }
        out.events.append(
            ("watch.measurement", f"watch {label} #{n}: {name}: {status}: {data['message']}", data)
        )
        if status == "critical":
            out.critical.append(f"{name}: {data['message']}")
        elif status == "warn":
            out.warn.append(f"{name}: {data['message']}")
    return out


def watch_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The watch's measurements of a deploy, oldest first (``tminus watch``, the report)."""
    return [dict(e["data"]) for e in events if e["type"] == "watch.measurement" and e["data"]]
