"""The check-source plug-in interface, its registry and the one evaluation rule for every check.

A source measures; :func:`judge` decides. A measurement's status is ``passed``, ``failed``,
``inconclusive`` (no data: pauses, never promotes) or ``error`` (the source failed). Its
level is ``ok``, ``warn`` or ``critical``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from tminus.errors import PlanError
from tminus.plan.checks import CheckBase
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.values import Condition, resolve_condition
from tminus.registry import Registry, Unknown

__all__ = [
    "BUILTIN_SOURCES",
    "SOURCES",
    "CheckContext",
    "CheckSource",
    "Measurement",
    "get_source",
    "judge",
    "plain_number",
    "resolve_conditions",
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
    #: The check's expect/warn/critical with ``${…}`` resolved for this measurement (set by
    #: :func:`tminus.engine.checking.run_check`); None: the check's own conditions.
    conditions: dict[str, Condition | None] | None = None


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


class CheckSource(Protocol):
    source: ClassVar[str]

    async def measure(self, check: Any, ctx: CheckContext) -> Measurement:
        """Measure; never raise for a failing source: return ``ok=False`` with ``error``."""
        ...


BUILTIN_SOURCES: dict[str, str] = {
    "command": "tminus.sources.command",
    "http": "tminus.sources.http",
    "sql": "tminus.sources.sql",
    "file_count": "tminus.sources.file_count",
    "no_data_loss": "tminus.sources.no_data_loss",
    "verify_backup": "tminus.sources.verify_backup",
    "prometheus": "tminus.sources.prometheus",
    "haproxy": "tminus.sources.haproxy",
    "probe": "tminus.sources.probe",
    "db_health": "tminus.sources.db_health",
    "kubernetes": "tminus.sources.kubernetes",
}


_LEVELS = ("expect", "warn", "critical")


def resolve_conditions(check: CheckBase, resolver: Resolver) -> dict[str, Condition | None]:
    """The check's conditions with ``${…}`` (variables, built-ins, artifacts, secrets)
    resolved by the deploy's resolver and parsed; raises ResolveError or ValueError."""
    out: dict[str, Condition | None] = {}
    for level in _LEVELS:
        cond: Condition | None = getattr(check, level)
        out[level] = None if cond is None else resolve_condition(cond, resolver.resolve)
    return out


#: Built-in sources, then third-party ones (entry-point group ``tminus.sources``; their plan
#: models are in ``tminus.check_models``: docs/plugins.md).
SOURCES: Registry[CheckSource] = Registry(
    "check source", BUILTIN_SOURCES, group="tminus.sources", default_attr="SOURCE"
)


def get_source(source: str) -> CheckSource:
    try:
        return SOURCES.get(source)
    except Unknown as exc:
        raise PlanError(
            f"check source '{source}' is not implemented in this version of tminus",
            hint="implemented sources: " + ", ".join(exc.known),
        ) from None


def check_name(check: CheckBase) -> str:
    return check.name or str(getattr(check, "source", "check"))


def plain_number(value: Any) -> Any:
    """A database's exact number (``Decimal``: PostgreSQL's ``numeric``, MariaDB's ``DECIMAL``
    and every decimal literal; ``Fraction``) as an ``int`` when integral, else a ``float``, so
    that every condition compares it as a number. Any other value is returned unchanged
    (numeric strings already compare as numbers)."""
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, Fraction):
        return int(value) if value.denominator == 1 else float(value)
    return value


def judge(check: CheckBase, m: Measurement) -> CheckResult:
    """Apply ``critical``, then ``expect``, then ``warn`` to a measurement: the conditions
    the provider resolved (``${…}``), else the check's own. Exact numbers (``Decimal``) are
    compared as numbers (see :func:`plain_number`)."""
    name = check_name(check)
    m.value = plain_number(m.value)
    if m.error is not None:
        return CheckResult(name, "error", "critical", m.value, m.error)
    conds = m.conditions or {level: getattr(check, level) for level in _LEVELS}
    expect, warn, critical = conds.get("expect"), conds.get("warn"), conds.get("critical")
    if m.no_data or (m.value is None and (expect or warn or critical)):
        return CheckResult(name, "inconclusive", "ok", None, m.message or "no data")
    unresolved = [str(c) for c in (expect, warn, critical) if c is not None and c.deferred]
    if unresolved:
        return CheckResult(
            name, "error", "critical", m.value, f"condition {unresolved[0]} was not resolved"
        )
    shown = _show(m.value)
    if critical is not None and critical.evaluate(m.value):
        return CheckResult(name, "failed", "critical", m.value, f"{shown} is CRITICAL ({critical})")
    if expect is not None and not expect.evaluate(m.value):
        return CheckResult(name, "failed", "critical", m.value, f"{shown}, expected {expect}")
    if not m.ok:
        return CheckResult(name, "failed", "critical", m.value, m.message or "the source failed")
    if warn is not None and warn.evaluate(m.value):
        return CheckResult(name, "passed", "warn", m.value, f"{shown} is WARN ({warn})")
    return CheckResult(name, "passed", "ok", m.value, m.message or f"{shown}")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
