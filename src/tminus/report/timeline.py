"""The planned-versus-actual timeline of a deploy: phases, their steps, variance and the
critical path.

Definitions (the report's legend repeats them):

- *origin*: when the deploy's first phase started (the wait for its checklist and approvals
  before that is not part of any phase); the deploy's creation time if no phase started;
- *planned*: the phases this deploy runs (all of the plan's, or the ``--phase`` selection), their
  ``estimate:`` laid end to end from the origin; a delayed phase (``after:``) starts its
  ``after`` past the planned end of the phase before it; a phase without an estimate is a
  zero-length planned bar;
- *actual*: the phase rows' start and end (a phase still running ends "now");
- *variance*: actual duration minus estimate (positive: longer than planned);
- *critical path*: phases run one after the other, so every phase that ran is on the chain
  that set the end time; within each, the longest step is the one that set most of it.

Charts are drawn per *group*: the phases up to the first delayed one, then each delayed phase
with those that follow it (a 30-day gap is not drawn to scale)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.plan.values import DeferredDuration
from tminus.report._fmt import iso

if TYPE_CHECKING:
    from tminus.plan.model import Plan

__all__ = ["build_timeline", "shown_phases"]

_STEP_KEY = re.compile(r"^phase/(\d+)/(step|verify)/(\d+)$")

#: Where ``tminus run --phase`` keeps its selection in a deploy's ``overrides`` (written by the
#: engine's program module; read here as data, the report does not import the engine).
SELECTION_KEY = "@selection"


def _seconds(td: timedelta | None) -> float | None:
    if td is None or isinstance(td, DeferredDuration):
        return None
    return td.total_seconds()


def shown_phases(plan: Plan | None, d: dict[str, Any], rows: dict[int, Any]) -> list[int]:
    """The phase indexes this deploy runs: its ``--phase`` selection, else all of the plan's
    (else the phase rows, when the plan text no longer loads)."""
    if plan is None:
        return sorted(rows)
    raw = (d.get("overrides") or {}).get(SELECTION_KEY)
    chosen = raw.get("phases") if isinstance(raw, dict) else None
    if isinstance(chosen, list) and chosen:
        return sorted(int(i) for i in chosen if 0 <= int(i) < len(plan.phases))
    return list(range(len(plan.phases)))


def _steps_of(steps: dict[str, dict[str, Any]], t: datetime) -> dict[int, list[dict[str, Any]]]:
    """The step and verify rows of each phase, in the order they ran."""
    out: dict[int, list[dict[str, Any]]] = {}
    for key, row in steps.items():
        m = _STEP_KEY.match(key)
        if not m:
            continue
        start, end = row["started_at"], row["ended_at"]
        dur = ((end or t) - start).total_seconds() if start is not None else None
        out.setdefault(int(m.group(1)), []).append(
            {
                "key": key,
                "title": row["title"],
                "kind": row["kind"],
                "state": row["state"],
                "attempts": row["attempts"],
                "started_at": iso(start),
                "ended_at": iso(end),
                "duration_s": dur,
                "error": row["error"],
                "_order": (m.group(2) == "verify", int(m.group(3))),
            }
        )
    for rows in out.values():
        rows.sort(key=lambda r: r.pop("_order"))
    return out


def build_timeline(
    plan: Plan | None,
    d: dict[str, Any],
    phase_rows: dict[int, dict[str, Any]],
    steps: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    t = now()
    shown = shown_phases(plan, d, phase_rows)
    started = [r["started_at"] for r in phase_rows.values() if r["started_at"] is not None]
    origin: datetime = min(started) if started else d["created_at"]
    by_phase = _steps_of(steps, t)
    cursor = origin
    phases: list[dict[str, Any]] = []
    groups: list[list[int]] = []
    for n, i in enumerate(shown):
        spec = plan.phases[i] if plan is not None and i < len(plan.phases) else None
        row = phase_rows.get(i)
        after = _seconds(spec.after) if spec is not None else None
        if after is not None and n > 0:
            cursor = cursor + timedelta(seconds=after)
            groups.append([])
        elif not groups:
            groups.append([])
        groups[-1].append(i)
        est = _seconds(spec.estimate) if spec is not None else None
        if est is None and row is not None and row.get("estimate_s") is not None:
            est = float(row["estimate_s"])
        p_start, p_end = cursor, cursor + timedelta(seconds=est or 0)
        cursor = p_end
        a_start = row["started_at"] if row else None
        a_end = row["ended_at"] if row else None
        actual = ((a_end or t) - a_start).total_seconds() if a_start is not None else None
        ran = [s for s in by_phase.get(i, []) if s["duration_s"] is not None]
        longest = max(ran, key=lambda s: s["duration_s"], default=None)
        phases.append(
            {
                "index": i,
                "number": i + 1,
                "name": spec.name if spec is not None else (row or {}).get("name", f"#{i + 1}"),
                "state": row["state"] if row else "pending",
                "downtime": bool(spec.downtime) if spec is not None else False,
                "after_s": after if n > 0 else None,
                "estimate_s": est,
                "planned_start": iso(p_start),
                "planned_end": iso(p_end),
                "actual_start": iso(a_start),
                "actual_end": iso(a_end),
                "running": a_start is not None and a_end is None,
                "actual_s": actual,
                "variance_s": actual - est if actual is not None and est is not None else None,
                "variance_pct": round(100 * (actual - est) / est, 1)
                if actual is not None and est
                else None,
                "critical": actual is not None,
                "critical_step": _critical_step(longest),
                "steps": by_phase.get(i, []),
            }
        )
    return _totals(origin, phases, groups, d)


def _critical_step(step: dict[str, Any] | None) -> dict[str, Any] | None:
    if step is None:
        return None
    return {
        "key": step["key"],
        "title": step["title"],
        "started_at": step["started_at"],
        "ended_at": step["ended_at"],
        "duration_s": step["duration_s"],
    }


def _totals(
    origin: datetime, phases: list[dict[str, Any]], groups: list[list[int]], d: dict[str, Any]
) -> dict[str, Any]:
    window = set(groups[0]) if groups else set()
    in_window = [p for p in phases if p["index"] in window]
    planned = sum(p["estimate_s"] or 0 for p in in_window)
    ends = [p["actual_end"] for p in in_window if p["actual_end"] is not None]
    done = bool(in_window) and all(p["actual_end"] is not None for p in in_window)
    actual_end = max(ends) if done else None
    actual = (
        (datetime.fromisoformat(actual_end) - origin).total_seconds()
        if actual_end is not None
        else None
    )
    critical = [
        {
            "phase": p["index"],
            "name": p["name"],
            "actual_s": p["actual_s"],
            "step": p["critical_step"],
        }
        for p in phases
        if p["critical"]
    ]
    return {
        "origin": iso(origin),
        "origin_is": "first phase start" if any(p["actual_start"] for p in phases) else "created",
        "created_at": iso(d["created_at"]),
        "window_planned_s": planned,
        "window_planned_end": iso(origin + timedelta(seconds=planned)),
        "window_actual_s": actual,
        "window_actual_end": actual_end,
        "window_variance_s": actual - planned if actual is not None else None,
        "groups": groups,
        "phases": phases,
        "critical_path": critical,
    }
