"""``params:`` values of a ``sql`` step or check converted to their declared type (for
:mod:`tminus.plan.sqlbind`)."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

PARAM_TYPES = ("str", "int", "float", "decimal", "bool", "date", "timestamp", "null")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def convert_param(value: Any, type_: str | None) -> Any:
    """A ``params:`` value as its declared type (no type: as written). Raises ValueError."""
    if type_ is None:
        return value
    if type_ == "null":
        if value is not None and value != "":
            raise ValueError("a null parameter has no value")
        return None
    if value is None:
        raise ValueError(f"a {type_} parameter needs a value")
    if type_ == "str":
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        low = str(value).strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{value!r} is not true or false")
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a {type_}")
    if type_ == "int":
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        raise ValueError(f"{value!r} is not an integer")
    if type_ == "float":
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise ValueError(f"{value!r} is not a number")
    if type_ == "decimal":
        if isinstance(value, int | float | str):
            try:
                d = Decimal(str(value).strip())
            except InvalidOperation:
                raise ValueError(f"{value!r} is not a decimal number") from None
            if not d.is_finite():
                raise ValueError(f"{value!r} is not a finite decimal number")
            return d
        raise ValueError(f"{value!r} is not a decimal number")
    if type_ == "date":
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        return date.fromisoformat(str(value).strip())
    if type_ == "timestamp":
        if isinstance(value, datetime):
            return value
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day)
        return datetime.fromisoformat(str(value).strip())
    raise ValueError(f"unknown type {type_!r}; one of {', '.join(PARAM_TYPES)}")
