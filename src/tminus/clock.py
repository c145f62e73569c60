"""The one clock of tminus: every "now" of the store, the engine and the server comes from here.

Production code calls :func:`now`; it reads the installed :class:`Clock`, by default the
system's (UTC, timezone-aware). Tests install another one through the testing seam
(:mod:`tminus.testing.seam`: an :class:`OffsetClock` for "two hours later", or their own) with
:func:`install`; nothing here reads the environment.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "OffsetClock", "SystemClock", "current", "install", "now"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...


class SystemClock:
    """The machine's clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class OffsetClock:
    """The machine's clock shifted by ``offset`` (a test's "30 days later")."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


_clock: Clock = SystemClock()


def now() -> datetime:
    """The current time from the installed clock."""
    return _clock.now()


def current() -> Clock:
    return _clock


def install(clock: Clock) -> Clock:
    """Make ``clock`` the clock of this process; returns the one it replaces."""
    global _clock
    previous, _clock = _clock, clock
    return previous
