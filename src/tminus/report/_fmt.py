"""Small formatting helpers shared by the report's renderers (no tminus imports)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

__all__ = ["duration", "iso", "parse_iso", "short_time", "signed_duration"]


def iso(value: datetime | None) -> str | None:
    """A timezone-aware time as ISO-8601 text (the JSON form of every time in the report)."""
    return value.isoformat() if value is not None else None


def parse_iso(value: Any) -> datetime | None:
    """An ISO-8601 text (or a datetime) as a datetime; None for anything else."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def duration(seconds: float | None) -> str:
    """``0.35s``, ``4:05``, ``1:02:03``, ``3d 4:00:00``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 10:
        return f"{seconds:.2f}s"
    s = round(seconds)
    days, s = divmod(s, 86400)
    text = f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else ""
    if not text:
        text = f"{s // 60}:{s % 60:02d}"
    if days:
        text = f"{days}d {s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return text


def signed_duration(seconds: float | None) -> str:
    """A variance: ``+1:05`` (later, longer), ``-0.20s`` (earlier, shorter)."""
    if seconds is None:
        return "-"
    return ("+" if seconds >= 0 else "-") + duration(abs(seconds))


def short_time(value: Any) -> str:
    """``2026-01-20 09:00:03 UTC`` from an ISO text or datetime; ``-`` when unknown."""
    t = parse_iso(value)
    if t is None:
        return "-"
    zone = t.tzname() or ""
    return f"{t:%Y-%m-%d %H:%M:%S} {zone}".rstrip()
