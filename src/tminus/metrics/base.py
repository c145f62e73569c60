"""The metric-provider plug-in interface and the one evaluation rule for every check.

A provider measures; :func:`judge` decides. A measurement's status is ``passed``, ``failed``,
``inconclusive`` (no data: pauses, never promotes) or ``error`` (the source failed). Its
level is ``ok``, ``warn`` or ``critical``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from tminus.errors import PlanError
from tminus.plan.checks import CheckBase
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan

__all__ = [
    "BUILTIN_PROVIDERS",
    "CheckContext",
    "Measurement",
    "MetricProvider",
    "get_provider",
    "judge",
]

Status = Literal["passed", "failed", "inconclusive", "error"]
Level = Literal["ok", "warn", "critical"]


@dataclass
class Measurement:
    """What a provider saw. ``value`` None means no data."""

    value: Any = None
    values: dict[str, Any] = field(default_factory=dict)
    ok: bool = True  # the source itself worked (a command's exit 0, an HTTP status match)
    error: str | None = None
    message: str = ""
    no_data: bool = False  # the source answered with nothing to judge: always inconclusive


@dataclass
class CheckResult:
    name: str
    status: Status
    level: Level
    value: Any
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class CheckContext:
    plan: Plan
    resolver: Resolver
    state_dir: Path
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)


class MetricProvider(Protocol):
    source: ClassVar[str]

    async def measure(self, check: Any, ctx: CheckContext) -> Measurement:
        """Measure; never raise for a failing source: return ``ok=False`` with ``error``."""
        ...


BUILTIN_PROVIDERS: dict[str, str] = {
    "command": "tminus.metrics.command",
    "http": "tminus.metrics.http",
    "sql": "tminus.metrics.sql",
    "file_count": "tminus.metrics.file_count",
    "no_data_loss": "tminus.metrics.no_data_loss",
    "verify_backup": "tminus.metrics.verify_backup",
    "prometheus": "tminus.metrics.prometheus",
    "haproxy": "tminus.metrics.haproxy",
    "probe": "tminus.metrics.probe",
}


def get_provider(source: str) -> MetricProvider:
    mod = BUILTIN_PROVIDERS.get(source)
    if mod is None:
        raise PlanError(
            f"check source '{source}' is not implemented in this version of tminus",
            hint="implemented sources: " + ", ".join(sorted(BUILTIN_PROVIDERS)),
        )
    provider: MetricProvider = import_module(mod).PROVIDER
    return provider


def check_name(check: CheckBase) -> str:
    return check.name or str(getattr(check, "source", "check"))


def judge(check: CheckBase, m: Measurement) -> CheckResult:
    """Apply ``critical``, then ``expect``, then ``warn`` to a measurement."""
    name = check_name(check)
    if m.error is not None:
        return CheckResult(name, "error", "critical", m.value, m.error)
    if m.no_data or (m.value is None and (check.expect or check.warn or check.critical)):
        return CheckResult(name, "inconclusive", "ok", None, m.message or "no data")
    shown = _show(m.value)
    if check.critical is not None and check.critical.evaluate(m.value):
        return CheckResult(
            name, "failed", "critical", m.value, f"{shown} is CRITICAL ({check.critical})"
        )
    if check.expect is not None and not check.expect.evaluate(m.value):
        return CheckResult(name, "failed", "critical", m.value, f"{shown}, expected {check.expect}")
    if not m.ok:
        return CheckResult(name, "failed", "critical", m.value, m.message or "the source failed")
    if check.warn is not None and check.warn.evaluate(m.value):
        return CheckResult(name, "passed", "warn", m.value, f"{shown} is WARN ({check.warn})")
    return CheckResult(name, "passed", "ok", m.value, m.message or f"{shown}")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
