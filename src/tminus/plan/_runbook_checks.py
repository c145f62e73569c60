"""Every check readable on paper: what it measures, what is expected, WARN and CRITICAL in
words ("HTTP 401 expected", "body contains 2.0.0", "error rate > 1% is CRITICAL"), and a label
derived from what it does when the plan gives it no name (never "sql check").

The words follow what the sources and :func:`tminus.sources.base.judge` do: an ``http`` check
passes on its ``status`` (default any 2xx) and ``body_contains``, and its value is the
latency unless ``metric`` says ``status`` or ``body``; ``no_data_loss`` and ``verify_backup``
pass on their own comparison."""

from __future__ import annotations

from tminus.plan.checks import (
    BackupCheck,
    CheckBase,
    CheckUse,
    CommandCheck,
    FileCountCheck,
    HaproxyCheck,
    HttpCheck,
    NoDataLossCheck,
    ProbeCheck,
    PrometheusCheck,
    SqlCheck,
)
from tminus.plan.describe import command_text, one_line

__all__ = ["check_label", "expectation", "measured", "threshold"]


def _path_of(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return "/" + rest.split("/", 1)[1] if "/" in rest else url


def check_label(check: CheckBase | None, ref: CheckBase | CheckUse | None = None) -> str:
    """The plan's name for the check, else one derived from what it does."""
    for c in (ref, check):
        if c is not None and c.name:
            return c.name
    if isinstance(ref, CheckUse) and check is None:
        return ref.use
    if check is None:
        return "(unknown check)"
    if isinstance(check, HttpCheck):
        return f"HTTP {check.method} {_path_of(check.url)}"
    if isinstance(check, ProbeCheck):
        return f"probe of {_path_of(check.url)}"
    if isinstance(check, SqlCheck):
        return f"query on {check.database}: {one_line(check.query, 48)}"
    if isinstance(check, FileCountCheck):
        return f"files {check.pattern} in {check.path}"
    if isinstance(check, PrometheusCheck):
        return f"metric {one_line(check.query, 48)}"
    if isinstance(check, HaproxyCheck):
        return f"HAProxy {check.router} {check.server or check.backend or ''}".rstrip()
    if isinstance(check, NoDataLossCheck):
        return f"no data lost since {check.snapshot}"
    if isinstance(check, BackupCheck):
        return f"backup {check.backup} restores"
    if isinstance(check, CommandCheck):
        return f"output of {one_line(command_text(check.command), 48)}"
    return f"{getattr(check, 'source', 'custom')} check"


def measured(check: CheckBase | None) -> str:
    """What the value compared with the conditions is."""
    if check is None:
        return "value"
    if check.metric:
        return check.metric.replace("_", " ")
    if isinstance(check, PrometheusCheck) and check.name and len(check.name) <= 40:
        return check.name[0].lower() + check.name[1:]  # a metric's name: "error rate > 1%"
    if isinstance(check, HttpCheck):
        return "latency"
    if isinstance(check, SqlCheck):
        return "result"
    if isinstance(check, FileCountCheck):
        return "file count"
    if isinstance(check, CommandCheck):
        return "output"
    if isinstance(check, ProbeCheck):
        return "error rate"
    return "value"


def _status(check: HttpCheck | ProbeCheck) -> str:
    if isinstance(check, ProbeCheck):
        return ""
    s = check.status
    if s is None:
        return "HTTP 2xx expected"
    if isinstance(s, list):
        return "HTTP " + " or ".join(str(x) for x in s) + " expected"
    return f"HTTP {s} expected"


def expectation(check: CheckBase | None) -> str:
    """Everything the check must meet to pass, in words; '' if it has no expectation."""
    if check is None:
        return ""
    parts: list[str] = []
    if isinstance(check, HttpCheck):
        parts.append(_status(check))
        if check.body_contains:
            parts.append(f'body contains "{check.body_contains}"')
    elif isinstance(check, NoDataLossCheck):
        allowed = check.allow_row_loss + check.allow_missing
        parts.append(
            "every table, index and file of the snapshot still there, no row or file count lower"
            + (f" (except {', '.join(allowed)})" if allowed else "")
        )
    elif isinstance(check, BackupCheck):
        parts.append("the backup restores into a scratch copy and matches its manifest")
    elif isinstance(check, CommandCheck) and check.metric != "exit_code":
        parts.append("exit 0")
    if check.expect is not None:
        parts.append(f"{measured(check)} {check.expect}")
    elif isinstance(check, SqlCheck) and check.warn is None and check.critical is None:
        parts.append("a true (non-zero, non-empty) first value")
    return ", ".join(parts)


def threshold(check: CheckBase | None, level: str) -> str:
    """``WARN``/``CRITICAL`` in words: "latency > 1s is CRITICAL"; '' when not set."""
    cond = getattr(check, level, None) if check is not None else None
    if cond is None:
        return ""
    return f"{measured(check)} {cond} is {level.upper()}"
