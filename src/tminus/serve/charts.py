"""What the deploy page draws from a deploy's events: the canary's weights, the analysis
measurements, the events of the "traffic and flags" section and the watch's charts.

A deploy with a long watch has thousands of measurements (a week's watch: ~5,000 events), and
the page is fetched again on every event by every person looking at it. What is drawn from
them is kept for the few deploys viewed last, under a **mark** of the events it was drawn
from: their number and the newest sequence number (:meth:`Store.event_mark`). Events are
never changed nor deleted, so an unchanged mark means the same events; a new event changes
the number even when its sequence number is lower than one already seen (on PostgreSQL a
transaction that took a number earlier can commit later). A mark costs one indexed count.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tminus.store.store import Store

__all__ = ["MAX_POINTS", "ROUTING", "Series", "downsample", "series"]

#: The events the page's "traffic and flags" section is drawn from.
ROUTING = (
    "blue_green.switched",
    "traffic.set",
    "traffic.restored",
    "flag.set",
    "flag.restored",
)
#: What the charts are drawn from.
TYPES = ("canary.weight", "analysis.measurement", "watch.measurement", *ROUTING)
#: The most points a watch chart draws per check (a week's watch has thousands: they are
#: downsampled, the lowest and the highest of each interval kept, so a spike is never hidden).
MAX_POINTS = 500
#: How many deploys' drawings are kept (the pages viewed last).
KEPT = 8


@dataclass(frozen=True)
class Series:
    """What the page draws from one deploy's events."""

    weights: list[dict[str, Any]]  # the canary's weight over time
    points: list[dict[str, Any]]  # every analysis measurement
    routing: list[dict[str, Any]]  # the events of the traffic-and-flags section
    watch: list[dict[str, Any]]  # each watch check with its chart


_kept: OrderedDict[str, tuple[tuple[int, int], Series]] = OrderedDict()
_lock = threading.Lock()


def series(store: Store, deploy_id: str, plan: Any) -> Series:
    """What the page draws of ``deploy_id`` (drawn again only when its events changed)."""
    mark = store.event_mark(deploy_id, TYPES)
    key = f"{store.url} {deploy_id}"
    with _lock:
        hit = _kept.get(key)
        if hit is not None and hit[0] == mark:
            _kept.move_to_end(key)
            return hit[1]
    drawn = _draw(store.events(deploy_id, types=TYPES), plan)
    with _lock:
        _kept[key] = (mark, drawn)
        _kept.move_to_end(key)
        while len(_kept) > KEPT:
            _kept.popitem(last=False)
    return drawn


def _draw(events: list[dict[str, Any]], plan: Any) -> Series:
    return Series(
        weights=[
            {"at": e["ts"], "weight": (e["data"] or {}).get("weight")}
            for e in events
            if e["type"] == "canary.weight"
        ],
        points=[e["data"] or {} for e in events if e["type"] == "analysis.measurement"],
        routing=[e for e in events if e["type"] in ROUTING],
        watch=_watch(plan, events),
    )


def _watch(plan: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The watch's checks with their charts (the report's section), each drawn from at most
    about :data:`MAX_POINTS` measurements (:func:`downsample`, before the report's code reads
    them: a week's watch is thousands); the counts are of every measurement."""
    from markupsafe import Markup

    from tminus.report import sections, svg

    by_check: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["type"] == "watch.measurement":
            by_check.setdefault(str((e["data"] or {}).get("check") or "?"), []).append(e)
    kept: list[dict[str, Any]] = []
    counts: dict[str, dict[str, int]] = {}
    for name, measured in by_check.items():
        counts[name] = {}
        for e in measured:
            status = str((e["data"] or {}).get("status") or "?")
            counts[name][status] = counts[name].get(status, 0) + 1
        kept += downsample(measured, MAX_POINTS)
    out = []
    for c in sections.watch(plan, kept)["checks"]:
        every = counts.get(c["check"], c["counts"])
        total = sum(every.values())
        out.append(
            {
                "check": c["check"],
                "counts": ", ".join(f"{k}: {v}" for k, v in sorted(every.items())),
                "chart": Markup(svg.watch_chart(c)),
                "shown": len(c["points"]),
                "total": total,
            }
        )
    return out


def _value(e: dict[str, Any]) -> float | None:
    v = (e["data"] or {}).get("value")
    try:
        return None if v is None or isinstance(v, bool) else float(v)
    except (TypeError, ValueError):
        return None


def downsample(measured: list[dict[str, Any]], most: int) -> list[dict[str, Any]]:
    """At most about ``most`` of one check's ``watch.measurement`` events, in their order:
    cut into ``most // 3`` runs, of each run its lowest and its highest value and the first
    measurement of each status in it (a WARN, a CRITICAL, a measurement that failed without
    a value is never dropped for its quiet neighbours)."""
    if len(measured) <= most:
        return measured
    buckets = max(1, most // 3)
    size = len(measured) / buckets
    out: list[dict[str, Any]] = []
    for b in range(buckets):
        run = measured[round(b * size) : round((b + 1) * size)]
        keep: set[int] = set()
        valued = [(v, i) for i, e in enumerate(run) if (v := _value(e)) is not None]
        if valued:
            keep.add(min(valued)[1])
            keep.add(max(valued)[1])
        seen: set[str] = set()
        for i, e in enumerate(run):
            status = str((e["data"] or {}).get("status"))
            if status not in seen:
                seen.add(status)
                keep.add(i)
        out.extend(run[i] for i in sorted(keep))
    return out
