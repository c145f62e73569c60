"""Real times on the runbook's timeline: T-marks with wall-clock time in the window's zone (and
a second zone, ``--tz``), and one timeline of everything time-based in the plan: the notices
before the window, the window itself, each phase's planned start and end (delayed phases
included), the ``during`` updates, the notices after success and the watch's cadence.

The times are laid as ``tminus serve`` lays its timers (:mod:`tminus.serve.planner`): T-0 is
the window's start; notices ``before_window`` at T-0 minus their offset; the *base time* (end
of the window's last phase) for ``after_success`` notices and the watch, whose period *i*
starts where the previous one ended unless it says ``start``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tminus.plan._runbook_timeline import Timeline
from tminus.plan.model import Plan
from tminus.plan.values import format_duration

__all__ = ["Clock", "Moment", "clock_for", "moments"]


@dataclass(frozen=True)
class Clock:
    """Wall-clock times from T-0: the window's start in its zone, and maybe a second zone."""

    start: datetime  # aware
    zone: ZoneInfo
    second: ZoneInfo | None = None

    def at(self, offset: timedelta, zone: ZoneInfo | None = None) -> str:
        t = (self.start + offset).astimezone(zone or self.zone)
        return t.strftime("%a %Y-%m-%d %H:%M")

    def headers(self) -> list[str]:
        out = [f"Time ({self.zone.key})"]
        if self.second is not None:
            out.append(f"Time ({self.second.key})")
        return out

    def cells(self, offset: timedelta) -> list[str]:
        out = [self.at(offset)]
        if self.second is not None:
            out.append(self.at(offset, self.second))
        return out


def clock_for(plan: Plan, start: datetime | None = None, tz: str | None = None) -> Clock | None:
    """The clock of the plan's window (``start`` overrides ``window.start``); None when the
    window has no start. ``tz``: the second zone (raises ValueError if unknown)."""
    zone = ZoneInfo(plan.window.timezone)
    second = ZoneInfo(tz) if tz else None
    when = start or plan.window.start
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return Clock(when, zone, second)


@dataclass(frozen=True)
class Moment:
    at: timedelta
    mark: str
    what: str
    kind: str  # notice, window, phase, update, watch


def _mark(td: timedelta) -> str:
    if td < timedelta():
        return "T-" + format_duration(-td)
    if td == timedelta():
        return "T-0:00"
    total = round(td.total_seconds())
    if td < timedelta(days=1) and total % 60 == 0:
        return f"T+{total // 3600}:{total // 60 % 60:02d}"
    return "T+" + format_duration(td)


def _channels(plan: Plan, names: list[str]) -> str:
    return ", ".join(names or list(plan.notifications.channels)) or "-"


def moments(plan: Plan, timeline: Timeline) -> list[Moment]:
    """Everything time-based in the plan, in time order (phases from ``timeline``)."""
    out: list[Moment] = []
    w = plan.window
    rules = plan.notifications.rules
    for rule in rules:
        if rule.when == "before_window" and rule.before is not None:
            what = f"Notice to {_channels(plan, rule.channels)}"
            if rule.message:
                what += f": {' '.join(rule.message.split())[:140]}"
            out.append(Moment(-rule.before, _mark(-rule.before), what, "notice"))
    out.append(Moment(timedelta(), "T-0:00", "Window opens", "window"))
    if w.duration is not None:
        out.append(Moment(w.duration, _mark(w.duration), "Window closes", "window"))
    for row in timeline.rows:
        out.append(Moment(row.at, row.mark, row.text, "phase"))
    inside = [b for b in timeline.bars if b.segment == 0]
    base = max((b.start + (b.length or timedelta()) for b in inside), default=timedelta())
    for rule in rules:
        if rule.when == "during" and rule.every is not None:
            until = f" until {_mark(w.duration)}" if w.duration else " while the deploy runs"
            what = f"Update to {_channels(plan, rule.channels)} every {format_duration(rule.every)}"
            out.append(Moment(rule.every, _mark(rule.every), what + until, "update"))
        elif rule.when == "after_success" and rule.after is not None:
            what = f"Notice to {_channels(plan, rule.channels)} {format_duration(rule.after)} "
            what += "after success" + (
                f": {' '.join(rule.message.split())[:140]}" if rule.message else ""
            )
            out.append(Moment(base + rule.after, _mark(base + rule.after), what, "notice"))
    if plan.watch is not None:
        cursor = timedelta()
        for i, p in enumerate(plan.watch.schedule):
            begin = p.start if p.start is not None else cursor
            cursor = begin + p.for_
            label = p.label or f"Watch period {i + 1}"
            what = (
                f"Watch: {label} — every {format_duration(p.every)} "
                f"for {format_duration(p.for_)} (until {_mark(base + cursor)})"
            )
            out.append(Moment(base + begin, _mark(base + begin), what, "watch"))
    out.sort(key=lambda m: (m.at, m.kind != "window"))
    return out
