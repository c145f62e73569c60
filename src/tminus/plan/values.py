"""Scalar value types of the plan format: durations, quantities and conditions.

A duration is written ``30s``, ``5m``, ``1h30m``, ``2d`` or ``1w`` (or a bare number of
seconds). A quantity is a number with an optional unit: ``0.5%`` is 0.005, ``100ms`` is 0.1
(seconds), ``2GB`` is 2e9 (bytes). A condition compares a measured value with a quantity or a
string: ``< 0.01``, ``<= 100ms``, ``== 9``, ``!= 0``, ``> 95%``, ``contains "ok"``,
``matches '^v2'``, ``between 1 and 5``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from typing_extensions import TypeAliasType

__all__ = [
    "MAX_DURATION",
    "Condition",
    "ConditionStr",
    "DeferredDuration",
    "DurationStr",
    "ValueError_",
    "VarDurationStr",
    "format_duration",
    "parse_condition",
    "parse_duration",
    "parse_quantity",
    "resolve_condition",
    "resolve_duration",
]


class ValueError_(ValueError):
    """A scalar that does not parse; pydantic turns it into a validation error."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """Parse ``30s``, ``5m``, ``1h30m``, ``2d``, ``1w`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError_("a duration is a number with a unit, like 30s, 5m, 1h30m or 2d")
    if isinstance(value, int | float):
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            raise ValueError_("a duration must be a finite number of seconds")
        if value < 0:
            raise ValueError_("a duration cannot be negative")
        return _timedelta(_float(value), value)
    if not isinstance(value, str):
        raise ValueError_("a duration is a number with a unit, like 30s, 5m, 1h30m or 2d")
    text = value.strip().lower().replace(" ", "")
    if not text:
        raise ValueError_("empty duration; write e.g. 30s, 5m, 1h30m or 2d")
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return _timedelta(float(text), value)
        raise ValueError_(
            f"'{value}' is not a duration; write e.g. 30s, 5m, 1h30m, 2d or 1w "
            "(units: ms, s, m, h, d, w)"
        )
    return _timedelta(total, value)


#: The longest duration a plan may name (far beyond any real window, well inside timedelta).
MAX_DURATION = timedelta(days=365 * 100)


def _float(value: int | float) -> float:
    """``float(value)``, with integers too large for a float becoming infinity."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _timedelta(seconds: float, original: Any) -> timedelta:
    if math.isinf(seconds) or seconds > MAX_DURATION.total_seconds():
        shown = str(original) if len(str(original)) <= 30 else str(original)[:27] + "..."
        raise ValueError_(f"'{shown}' is too long for a duration (at most 100 years)")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta | None) -> str:
    """Render a duration compactly: ``1h30m``, ``30d``, ``45s``."""
    if td is None:
        return "-"
    if isinstance(td, DeferredDuration):
        return td.text
    secs = td.total_seconds()
    if secs < 1 and secs > 0:
        return f"{secs * 1000:g}ms"
    secs_i = round(secs)
    if secs_i == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs_i >= size:
            n, secs_i = divmod(secs_i, size)
            parts.append(f"{n}{unit}")
    return "".join(parts)


def _duration_before(value: Any) -> Any:
    # Keep the parsed timedelta; the original text is re-derivable with format_duration.
    return parse_duration(value)


# A named alias (``TypeAliasType``): pydantic builds its validator once and refers to it from
# every field that uses it, instead of once per field (#14: ``tminus check`` start-up).
DurationStr = TypeAliasType(
    "DurationStr",
    Annotated[
        timedelta,
        BeforeValidator(_duration_before),
        PlainSerializer(format_duration, return_type=str),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$"},
                    {"type": "number", "minimum": 0},
                ],
                "description": "A duration: 30s, 5m, 1h30m, 2d, 1w, or seconds.",
            }
        ),
    ],
)


class DeferredDuration(timedelta):
    """A duration written with ``${…}`` (``pause: ${hold}``): resolved when the step runs
    (:func:`resolve_duration`). Until then it is a zero ``timedelta`` that keeps its text."""

    text: str

    def __new__(cls, text: str) -> DeferredDuration:
        self = super().__new__(cls, 0)
        self.text = text
        return self

    def __repr__(self) -> str:
        return f"DeferredDuration({self.text!r})"

    def __reduce__(self) -> Any:
        return (DeferredDuration, (self.text,))


def _var_duration_before(value: Any) -> Any:
    if isinstance(value, str) and "${" in value:
        return DeferredDuration(value.strip())
    return parse_duration(value)


def resolve_duration(
    value: timedelta, resolve: Callable[[str], str], what: str = "duration"
) -> timedelta:
    """The run-time value of a duration: ``value`` itself, or a :class:`DeferredDuration`'s
    text resolved with ``resolve`` (``Resolver.resolve``) and parsed. A value that is not a
    duration raises :class:`ValueError_` naming the field, the text and the value."""
    if not isinstance(value, DeferredDuration):
        return value
    resolved = resolve(value.text)
    try:
        return parse_duration(resolved)
    except ValueError_ as exc:
        raise ValueError_(f"{what} '{value.text}' is '{resolved}', not a duration: {exc}") from None


#: A duration that may also be written with variables (``${hold}``), resolved at run time.
VarDurationStr = Annotated[
    timedelta,
    BeforeValidator(_var_duration_before),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$"},
                {"type": "string", "pattern": r"\$\{"},
                {"type": "number", "minimum": 0},
            ],
            "description": "A duration: 30s, 5m, 1h30m, 2d, 1w, seconds, or ${variable}.",
        }
    ),
]

_QUANTITY = re.compile(
    r"^\s*(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(%|ms|s|m|h|d|kb|mb|gb|tb|k|b)?\s*$", re.IGNORECASE
)
#: Multipliers of the units; fractions are applied as divisions (95% is 95 / 100, exactly the
#: float 0.95, where 95 * 0.01 would be 0.9500000000000001).
_QUANTITY_DIVISOR = {"%": 100.0, "ms": 1000.0}
_QUANTITY_SCALE = {
    "%": 0.01,
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "b": 1.0,
    "k": 1e3,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
}


def parse_quantity(text: str) -> float | None:
    """Parse ``0.5%`` → 0.005, ``100ms`` → 0.1, ``2GB`` → 2e9, ``9`` → 9; None if not numeric."""
    m = _QUANTITY.match(text)
    if not m:
        return None
    number = float(m.group(1))
    unit = (m.group(2) or "").lower()
    if unit in _QUANTITY_DIVISOR:
        return number / _QUANTITY_DIVISOR[unit]
    return number * _QUANTITY_SCALE.get(unit, 1.0)


_OPS = ("<=", ">=", "==", "!=", "<", ">")
_WORD_OPS = ("contains", "matches", "not contains")


@dataclass(frozen=True)
class Condition:
    """A parsed condition: ``op`` applied to the measured value and ``operand``."""

    text: str
    op: str
    operand: float | str
    upper: float | None = None  # for "between"

    @property
    def deferred(self) -> bool:
        """Written with ``${…}``: resolved at run time (:func:`resolve_condition`)."""
        return self.op == "${}"

    def evaluate(self, value: Any) -> bool:
        """True when ``value`` meets the condition. A missing value never meets it."""
        if self.deferred:
            raise ValueError_(f"'{self.text}' holds variables: resolve it first")
        if value is None:
            return False
        if self.op in ("contains", "not contains"):
            found = str(self.operand) in str(value)
            return found if self.op == "contains" else not found
        if self.op == "matches":
            return re.search(str(self.operand), str(value)) is not None
        if self.op == "between":
            num = _as_number(value)
            assert self.upper is not None
            return num is not None and float(self.operand) <= num <= self.upper
        if isinstance(self.operand, str):
            left = str(value)
            if self.op == "==":
                return left == self.operand
            if self.op == "!=":
                return left != self.operand
            return False
        num = _as_number(value)
        if num is None:
            return False
        # Values within rounding error of the operand count as equal to it, so that a
        # measured 0.95 meets '>= 95%' whatever way either side was computed.
        same = math.isclose(num, self.operand, rel_tol=1e-12, abs_tol=1e-12)
        return {
            "<": num < self.operand and not same,
            "<=": num <= self.operand or same,
            ">": num > self.operand and not same,
            ">=": num >= self.operand or same,
            "==": same,
            "!=": not same,
        }[self.op]

    def __str__(self) -> str:
        return self.text


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return _float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        return parse_quantity(value.strip())
    return None


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_condition(value: Any) -> Condition:
    """Parse a condition string; a bare value means ``== value``."""
    if isinstance(value, Condition):
        return value
    if isinstance(value, bool):
        return Condition(text=f"== {str(value).lower()}", op="==", operand=1.0 if value else 0.0)
    if isinstance(value, int | float):
        return Condition(text=f"== {value}", op="==", operand=_float(value))
    if not isinstance(value, str) or not value.strip():
        raise ValueError_(
            "a condition is an operator and a value, like '< 0.01', '>= 95%', '== 9', "
            "'<= 100ms' or 'contains \"ok\"'"
        )
    text = value.strip()
    if "${" in text:  # resolved and parsed when the check runs
        return Condition(text=text, op="${}", operand=text)
    low = text.lower()
    m = re.fullmatch(r"between\s+(\S+)\s+and\s+(\S+)", low)
    if m:
        lo, hi = parse_quantity(m.group(1)), parse_quantity(m.group(2))
        if lo is None or hi is None or lo > hi:
            raise ValueError_(f"'{text}': write 'between LOW and HIGH' with LOW <= HIGH")
        return Condition(text=text, op="between", operand=lo, upper=hi)
    for word in sorted(_WORD_OPS, key=len, reverse=True):
        if low.startswith(word + " "):
            operand = _unquote(text[len(word) :])
            if word == "matches":
                try:
                    re.compile(operand)
                except (re.error, OverflowError, RecursionError) as exc:
                    raise ValueError_(f"'{text}': bad regular expression: {exc}") from None
            return Condition(text=text, op=word, operand=operand)
    for op in _OPS:
        if text.startswith(op):
            rest = text[len(op) :].strip()
            if not rest:
                raise ValueError_(f"'{text}': the operator '{op}' needs a value after it")
            number = parse_quantity(rest)
            if number is None:
                if op in ("==", "!="):
                    return Condition(text=text, op=op, operand=_unquote(rest))
                raise ValueError_(
                    f"'{text}': '{rest}' is not a number "
                    "(units allowed: %, ms, s, m, h, d, KB, MB, GB)"
                )
            return Condition(text=text, op=op, operand=number)
    number = parse_quantity(text)
    if number is not None:
        return Condition(text=f"== {text}", op="==", operand=number)
    raise ValueError_(
        f"'{text}' is not a condition; write an operator and a value, like '< 0.01', "
        "'>= 95%', '== 9' or 'contains \"ok\"'"
    )


ConditionStr = Annotated[
    Condition,
    BeforeValidator(parse_condition),
    PlainSerializer(lambda c: c.text, return_type=str),
    WithJsonSchema(
        {
            "type": ["string", "number", "boolean"],
            "description": "A condition: '< 0.01', '>= 95%', '== 9', '<= 100ms', "
            "'contains \"ok\"', 'matches REGEX', 'between 1 and 5'.",
        }
    ),
]


def resolve_condition(cond: Condition, resolve: Callable[[str], str]) -> Condition:
    """The run-time condition: ``cond`` itself, or a deferred one's text resolved with
    ``resolve`` (``Resolver.resolve``) and parsed (:class:`ValueError_` when it does not)."""
    if not cond.deferred:
        return cond
    return parse_condition(resolve(cond.text))
