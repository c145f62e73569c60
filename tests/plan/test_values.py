"""Durations, quantities and conditions: the scalar value types of the plan format."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from tminus.plan.values import (
    MAX_DURATION,
    Condition,
    ValueError_,
    format_duration,
    parse_condition,
    parse_duration,
    parse_quantity,
)

# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1w", 604800),
        ("1w2d3h4m5s", 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        ("250ms", 0.25),
        ("1.5h", 5400),
        ("1h 30m", 5400),
        (" 5M ", 300),
        ("90", 90),
        ("2.5", 2.5),
        (0, 0),
        (45, 45),
        (1.5, 1.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_parse_duration_passes_timedeltas_through() -> None:
    td = timedelta(minutes=7)
    assert parse_duration(td) is td


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("5 minutes", "is not a duration"),
        ("5x", "is not a duration"),
        ("m5", "is not a duration"),
        ("1h30", "is not a duration"),
        ("-5m", "is not a duration"),
        (-1, "cannot be negative"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (True, "a duration is a number with a unit"),
        ([5], "a duration is a number with a unit"),
        (None, "a duration is a number with a unit"),
        (1e20, "too long"),
        (10**400, "too long"),
        (-(10**400), "cannot be negative"),
        ("99999999999999w", "too long"),
    ],
)
def test_bad_durations(value: object, message: str) -> None:
    with pytest.raises(ValueError_, match=message):
        parse_duration(value)


def test_the_longest_duration_is_accepted_and_one_more_second_is_not() -> None:
    limit = int(MAX_DURATION.total_seconds())
    assert parse_duration(limit) == MAX_DURATION
    with pytest.raises(ValueError_, match="too long"):
        parse_duration(limit + 1)


def test_duration_error_lists_the_units() -> None:
    with pytest.raises(ValueError_) as info:
        parse_duration("3 fortnights")
    assert "units: ms, s, m, h, d, w" in str(info.value)


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (None, "-"),
        (timedelta(0), "0s"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(seconds=45), "45s"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(days=30), "30d"),
        (timedelta(days=1, seconds=1), "1d1s"),
    ],
)
def test_format_duration(td: timedelta | None, text: str) -> None:
    assert format_duration(td) == text


@pytest.mark.parametrize("text", ["30s", "5m", "1h30m", "2d", "3h4m5s"])
def test_format_duration_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


# --- quantities ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("9", 9.0),
        ("-3", -3.0),
        ("0.5", 0.5),
        ("0.5%", 0.005),
        ("95%", 0.95),
        ("100ms", 0.1),
        ("2s", 2.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("2GB", 2e9),
        ("2gb", 2e9),
        ("3MB", 3e6),
        ("4KB", 4e3),
        ("4k", 4e3),
        ("1TB", 1e12),
        ("10b", 10.0),
        ("1e3", 1000.0),
        (" 7 % ", 0.07),
    ],
)
def test_parse_quantity(text: str, value: float) -> None:
    result = parse_quantity(text)
    assert result is not None
    assert math.isclose(result, value)


@pytest.mark.parametrize("text", ["", "abc", "5 apples", "%", "1.2.3", "nan", "5%%"])
def test_parse_quantity_rejects_non_numbers(text: str) -> None:
    assert parse_quantity(text) is None


# --- conditions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "op", "operand"),
    [
        ("< 0.01", "<", 0.01),
        ("<= 100ms", "<=", 0.1),
        ("> 95%", ">", 0.95),
        (">= 95%", ">=", 0.95),
        ("== 9", "==", 9.0),
        ("!= 0", "!=", 0.0),
        ("<0.5", "<", 0.5),
        ("== ok", "==", "ok"),
        ('!= "down"', "!=", "down"),
        ('contains "ok"', "contains", "ok"),
        ("contains ok", "contains", "ok"),
        ("not contains 'error'", "not contains", "error"),
        ("matches '^v2'", "matches", "^v2"),
    ],
)
def test_parse_condition(text: str, op: str, operand: float | str) -> None:
    cond = parse_condition(text)
    assert cond.op == op
    if isinstance(operand, float):
        assert isinstance(cond.operand, float)
        assert math.isclose(cond.operand, operand)
    else:
        assert cond.operand == operand
    assert str(cond) == text


def test_between() -> None:
    cond = parse_condition("between 1 and 5")
    assert (cond.op, cond.operand, cond.upper) == ("between", 1.0, 5.0)
    assert [cond.evaluate(v) for v in (0.9, 1, 3, 5, 5.1)] == [False, True, True, True, False]
    ms = parse_condition("between 100ms and 2s")
    assert (ms.operand, ms.upper) == (0.1, 2.0)


@pytest.mark.parametrize(
    ("value", "op", "operand", "text"),
    [
        (9, "==", 9.0, "== 9"),
        (0.5, "==", 0.5, "== 0.5"),
        (True, "==", 1.0, "== true"),
        (False, "==", 0.0, "== false"),
        ("42", "==", 42.0, "== 42"),
        ("95%", "==", 0.95, "== 95%"),
    ],
)
def test_bare_values_mean_equals(value: object, op: str, operand: float, text: str) -> None:
    cond = parse_condition(value)
    assert (cond.op, cond.operand, cond.text) == (op, operand, text)


def test_parse_condition_passes_conditions_through() -> None:
    cond = Condition(text="< 1", op="<", operand=1.0)
    assert parse_condition(cond) is cond


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("< 0.01", 0.005, True),
        ("< 0.01", 0.01, False),
        ("<= 0.01", 0.01, True),
        ("> 95%", 0.96, True),
        ("> 95%", "96%", True),
        ("> 95%", 0.95, False),
        (">= 95%", 0.95, True),
        ("== 9", 9, True),
        ("== 9", "9", True),
        ("== 9", 8, False),
        ("!= 0", 0, False),
        ("!= 0", 3, True),
        ("<= 100ms", timedelta(milliseconds=90), True),
        ("<= 100ms", "150ms", False),
        ("== 1", True, True),
        ("== ok", "ok", True),
        ("== ok", "OK", False),
        ("!= ok", "down", True),
        ('contains "ok"', "status: ok", True),
        ('contains "ok"', "status: down", False),
        ("not contains 'error'", "all fine", True),
        ("not contains 'error'", "an error", False),
        ("matches '^v2'", "v2.1.0", True),
        ("matches '^v2'", "v1.9", False),
        ("< 5", "not a number", False),
        ("< 5", [1], False),
        ("> 1", None, False),
        ("contains x", None, False),
        ("between 1 and 5", "n/a", False),
    ],
)
def test_evaluate(text: str, value: object, expected: bool) -> None:
    assert parse_condition(text).evaluate(value) is expected


def test_word_operators_are_case_insensitive_but_keep_the_operand() -> None:
    cond = parse_condition('Contains "OK"')
    assert cond.op == "contains"
    assert cond.evaluate("all OK")
    assert not cond.evaluate("all ok")
    upper = parse_condition("BETWEEN 1 AND 5")
    assert upper.op == "between"
    assert upper.evaluate(2)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "a condition is an operator and a value"),
        ("   ", "a condition is an operator and a value"),
        (None, "a condition is an operator and a value"),
        ([1], "a condition is an operator and a value"),
        ("<", "needs a value after it"),
        (">=", "needs a value after it"),
        ("< lots", "'lots' is not a number"),
        (">= 5 apples", "is not a number"),
        ("=< 3", "is not a condition"),
        ("approximately 3", "is not a condition"),
        ("contains", "is not a condition"),
        ("between 5 and 1", "LOW <= HIGH"),
        ("between a and 5", "LOW <= HIGH"),
        ("matches '('", "bad regular expression"),
        ("matches a{4294967296}", "bad regular expression"),
        ("matches " + "(" * 2000 + ")" * 2000, "bad regular expression"),
    ],
)
def test_bad_conditions(value: object, message: str) -> None:
    with pytest.raises(ValueError_, match=message):
        parse_condition(value)


def test_number_error_lists_the_units() -> None:
    with pytest.raises(ValueError_) as info:
        parse_condition("< 5 parsecs")
    assert "units allowed: %, ms, s, m, h, d, KB, MB, GB" in str(info.value)


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        (">= 95%", 19 / 20, True),
        (">= 95%", 0.95 * (1 - 1e-15), True),
        ("> 95%", 0.95 * (1 + 1e-15), False),
        ("<= 0.3", 0.1 + 0.2, True),
        ("< 0.3", 0.1 + 0.2, False),
        ("<= 100ms", 0.1, True),
    ],
)
def test_boundaries_are_not_lost_to_float_rounding(text: str, value: float, expected: bool) -> None:
    assert parse_condition(text).evaluate(value) is expected


def test_percent_is_exact() -> None:
    assert parse_quantity("95%") == 0.95
    assert parse_quantity("7%") == 0.07
    assert parse_quantity("100ms") == 0.1


def test_integers_too_large_for_a_float_do_not_crash() -> None:
    cond = parse_condition(10**400)
    assert cond.op == "==" and cond.operand == math.inf
    assert parse_condition("< 5").evaluate(10**400) is False
    assert parse_condition("> 5").evaluate(10**400) is True
