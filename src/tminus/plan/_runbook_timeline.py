"""The T-timeline of a runbook: T-0:00 at the first phase's start, marks cumulative from the
phases' estimates (delays shown as T+30d), as text rows and as bars for the HTML chart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tminus.plan._runbook_text import phase_name
from tminus.plan.steps import MaintenanceStep
from tminus.plan.values import format_duration


@dataclass(frozen=True)
class TimelineRow:
    mark: str
    text: str
    #: From T-0 (the first phase's start) to the row's wall-clock time, as the engine runs
    #: the phases: a delayed phase starts ``after`` the end of the phase before it (so
    #: ``T+30d`` after a 35-minute window is 30 days and 35 minutes after T-0).
    at: timedelta = timedelta()


@dataclass(frozen=True)
class TimelineBar:
    """One phase on the chart: its segment (0 = in the window, n = after the n-th delay)."""

    number: int
    name: str
    segment: int
    start: timedelta
    length: timedelta | None
    downtime: bool
    delay: str | None
    start_mark: str
    end_mark: str


@dataclass
class Timeline:
    rows: list[TimelineRow]
    bars: list[TimelineBar]

    def lines(self) -> list[str]:
        width = max((len(r.mark) for r in self.rows), default=0)
        return [f"{r.mark:<{width}}  {r.text}".rstrip() for r in self.rows]


def _clock(td: timedelta, seconds: bool) -> str:
    total = round(td.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}" + (f":{secs:02d}" if seconds else "")


def _mark(delay: timedelta, offset: timedelta, seconds: bool, first: bool) -> str:
    if first:
        return "T-" + _clock(timedelta(), seconds)
    if delay:
        return "T+" + format_duration(delay) + (f"+{_clock(offset, seconds)}" if offset else "")
    return "T+" + _clock(offset, seconds)


def _maintenance(phase: object, action: str) -> bool:
    steps = getattr(phase, "steps", [])
    return any(isinstance(s, MaintenanceStep) and s.action == action for s in steps)


def build_timeline(phases: list[object]) -> Timeline:
    """T-0:00 at the first phase's start, cumulative from estimates; delays shown as T+30d."""
    seconds = any(
        (getattr(p, "estimate", None) or timedelta()).total_seconds() % 60 for p in phases
    )
    rows: list[TimelineRow] = []
    bars: list[TimelineBar] = []
    delay = timedelta()
    offset = timedelta()
    segment = 0
    clock = timedelta()  # from T-0, as the engine runs it: a delay counts from the end before
    for number, phase in enumerate(phases, 1):
        name = phase_name(number, str(getattr(phase, "name", "")))
        estimate: timedelta | None = getattr(phase, "estimate", None)
        after: timedelta | None = getattr(phase, "after", None)
        downtime = bool(getattr(phase, "downtime", False))
        first = number == 1
        delayed = after is not None and not first
        if delayed:
            assert after is not None
            segment += 1
            delay += after
            offset = timedelta()
            clock += after
        start_mark = _mark(delay, offset, seconds, first)
        notes = [name]
        if _maintenance(phase, "on"):
            notes.append("Maintenance Mode ON")
        elif downtime:
            notes.append("downtime starts")
        if delayed:
            notes.append(f"{format_duration(after)} after phase {number - 1}")
        if first or delayed or len(notes) > 1:
            rows.append(
                TimelineRow(start_mark, f"Phase {number} Start ({'; '.join(notes)})", clock)
            )
        offset += estimate or timedelta()
        clock += estimate or timedelta()
        end_mark = _mark(delay, offset, seconds, False)
        notes = [name]
        if _maintenance(phase, "off"):
            notes.append("Maintenance Mode OFF")
        elif downtime:
            notes.append("downtime ends")
        if estimate is None:
            notes.append("no estimate")
        rows.append(TimelineRow(end_mark, f"Phase {number} Complete ({'; '.join(notes)})", clock))
        bars.append(
            TimelineBar(
                number=number,
                name=name,
                segment=segment,
                start=offset - (estimate or timedelta()),
                length=estimate,
                downtime=downtime,
                delay=f"+{format_duration(after)}" if delayed else None,
                start_mark=start_mark,
                end_mark=end_mark,
            )
        )
    return Timeline(rows, bars)
