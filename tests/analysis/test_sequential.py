"""The sequential tests: false-positive bound under continuous monitoring, hard and subtle
failures, on simulated Bernoulli streams with fixed seeds (the tests' input is numbers)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Literal

import pytest

from tminus.sources.sequential import (
    LatencyTest,
    OneSampleTest,
    SequentialTest,
    ratio_grid,
)


def routed(
    rnd: random.Random,
    p_canary: float,
    p_baseline: float,
    *,
    weight: float,
    horizon: int,
    alpha: float = 0.01,
    test: SequentialTest | None = None,
) -> int | None:
    """A router split at ``weight``: canary requests at detection (None: not by ``horizon``).

    Each request goes to the canary with probability ``weight``. Between canary requests and
    baseline errors ("events") the baseline's successful requests come in runs (geometric);
    the test is looked at before each event (after the run of baseline successes: between
    events the statistic only moves with them, and monotonically) and after it: that is
    looking after every request.
    """
    test = SequentialTest(alpha, weight=weight) if test is None else test
    ce = cn = be = bn = 0
    event = weight + (1 - weight) * p_baseline  # a canary request, or a baseline error
    while cn < horizon:
        run = int(math.log(1.0 - rnd.random()) / math.log(1.0 - event))
        if run:
            bn += run
            if test.update(ce, cn, be, bn).canary_worse:
                return cn
        if rnd.random() < weight / event:
            cn += 1
            ce += rnd.random() < p_canary
        else:
            be += 1
            bn += 1
        if test.update(ce, cn, be, bn).canary_worse:
            return cn
    return None


def per_request(
    rnd: random.Random, test: SequentialTest, p_canary: float, p_baseline: float, n: int
) -> int | None:
    """A 50/50 coin per request, the test updated after every request: canary n at detection."""
    ce = cn = be = bn = 0
    for _ in range(n):
        if rnd.random() < 0.5:
            cn += 1
            ce += rnd.random() < p_canary
        else:
            bn += 1
            be += rnd.random() < p_baseline
        if test.update(ce, cn, be, bn).canary_worse:
            return cn
    return None


def test_false_positive_rate_under_continuous_monitoring_is_at_most_alpha() -> None:
    """Safety test. Mutation tried: ``_OddsMixture.add_successes`` betting on the baseline's
    successes only (the canary's successes left out): 300/300 false alarms (failed)."""
    # A/A at 50/50, looked at after every request, 300 runs of 3000 canary requests each.
    rnd = random.Random(20261122)
    runs, alpha = 300, 0.05
    false = sum(
        routed(rnd, 0.05, 0.05, weight=0.5, horizon=3000, alpha=alpha) is not None
        for _ in range(runs)
    )
    # alpha plus three binomial standard deviations of sampling error
    assert false / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), false


def test_plug_in_weight_keeps_the_false_positive_rate() -> None:
    # Without a known weight the canary's share so far stands in: checked on A/A at 10% share.
    rnd = random.Random(7)
    runs, alpha, false = 200, 0.05, 0
    for _ in range(runs):
        test = SequentialTest(alpha)
        ce = cn = be = bn = 0
        for _ in range(100):  # 100 looks, 200 requests each
            for _ in range(200):
                if rnd.random() < 0.1:
                    cn += 1
                    ce += rnd.random() < 0.02
                else:
                    bn += 1
                    be += rnd.random() < 0.02
            if test.update(ce, cn, be, bn).canary_worse:
                false += 1
                break
    assert false / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), false


def test_a_canary_failing_every_request_is_caught_within_ten_of_its_requests() -> None:
    rnd = random.Random(1)
    found = [
        per_request(rnd, SequentialTest(0.01, weight=0.5), 1.0, 0.005, 1000) for _ in range(200)
    ]
    assert all(n is not None for n in found)
    counts = sorted(n for n in found if n is not None)
    assert counts[len(counts) // 2] <= 9  # median
    assert counts[int(0.9 * len(counts))] <= 10, counts  # 90% within ten canary requests


def test_subtle_regression_half_percent_to_three_percent_at_five_percent_weight() -> None:
    rnd = random.Random(3)
    at = [routed(rnd, 0.03, 0.005, weight=0.05, horizon=3000) for _ in range(100)]
    found = sorted(n for n in at if n is not None)
    assert len(found) >= 90, len(found)  # power >= 90% within 3000 canary requests
    assert found[len(found) // 2] <= 500, found  # median canary requests to detection


def test_the_prior_leans_to_small_ratios_and_finds_subtle_regressions_sooner() -> None:
    """Each ratio of the mixture has 2/3 the prior weight of the one below (``PRIOR_DECAY``):
    against equal weights on the same streams, a 6x regression (0.5% -> 3%) at a 5% weight is
    found after fewer canary requests (median 183 against 204 over 1,000 runs in
    bench/canary_sequential.py) and a canary failing every request as soon. Mutation tried:
    ``PRIOR_DECAY = 1`` (equal weights, the previous prior): the medians are then equal and
    this test fails."""

    def equal_weights() -> SequentialTest:
        test = SequentialTest(0.01, weight=0.05)
        k = len(test._mix.log_prior)
        test._mix.log_prior = [-math.log(k)] * k
        return test

    for p_canary, runs, better in ((0.03, 300, True), (1.0, 100, False)):
        new, old = [], []
        for i in range(runs):
            for found, test in ((new, SequentialTest(0.01, weight=0.05)), (old, equal_weights())):
                n = routed(random.Random(i), p_canary, 0.005, weight=0.05, horizon=5000, test=test)
                found.append(math.inf if n is None else n)
        new_median, old_median = sorted(new)[runs // 2], sorted(old)[runs // 2]
        if better:
            assert new_median <= 0.95 * old_median, (new_median, old_median)
        else:
            assert new_median <= old_median, (new_median, old_median)


def test_a_better_canary_is_not_called_worse() -> None:
    rnd = random.Random(5)
    worse = sum(
        routed(rnd, 0.01, 0.05, weight=0.5, horizon=4000, alpha=0.05) is not None
        for _ in range(100)
    )
    assert worse == 0


def test_statistic_p_value_and_no_difference() -> None:
    test = SequentialTest(0.01, weight=0.5)
    d = test.update(0, 0, 0, 0)
    assert d.verdict == "continue" and d.statistic == 1.0 and d.p_value == 1.0
    assert d.threshold == pytest.approx(100.0)
    # many errors shared evenly: evidence for "not twice as many" -> no_difference
    d = test.update(60, 6000, 60, 6000)
    assert d.verdict == "no_difference"
    assert d.statistic < 1.0
    # then the canary's errors pile up: canary_worse, and it stays so
    d = test.update(160, 6100, 60, 6100)
    assert d.canary_worse and d.statistic >= 100 and d.p_value <= 0.01
    d = test.update(160, 9000, 160, 9000)
    assert d.canary_worse and test.decided


def test_counts_are_cumulative_and_checked() -> None:
    test = SequentialTest(weight=0.5)
    test.update(3, 10, 0, 10)
    with pytest.raises(ValueError, match="went down"):
        test.update(2, 10, 0, 10)
    with pytest.raises(ValueError, match="more errors"):
        SequentialTest().update(3, 2, 0, 0)
    with pytest.raises(ValueError, match="weight"):
        SequentialTest(weight=1.0)
    with pytest.raises(ValueError, match="alpha"):
        SequentialTest(alpha=0)


def test_one_sample_against_an_error_budget() -> None:
    test = OneSampleTest(0.01, alpha=0.01)
    assert not test.update(1, 1).canary_worse
    assert test.update(2, 2).canary_worse  # two failures out of two: far above 1%
    rnd = random.Random(11)
    runs, false = 100, 0
    for _ in range(runs):  # at the budget exactly, looked at after every request
        t = OneSampleTest(0.05, alpha=0.05)
        errors = 0
        for n in range(1, 601):
            errors += rnd.random() < 0.05
            if t.update(errors, n).canary_worse:
                false += 1
                break
    assert false / runs <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / runs), false


def test_latency_test_finds_a_slow_canary_and_not_an_equal_one() -> None:
    rnd = random.Random(2)
    slow = LatencyTest(0.01, weight=0.5)
    seen = 0
    for _ in range(400):
        arm: Literal["canary", "baseline"] = "canary" if rnd.random() < 0.5 else "baseline"
        seconds = rnd.lognormvariate(-5, 0.3) + (0.1 if arm == "canary" else 0.0)
        seen += arm == "canary"
        if slow.observe(arm, seconds).canary_worse:
            break
    assert slow.decision.canary_worse
    assert seen <= 40, seen  # 20 baseline latencies first, then ~10 slow canary requests
    false = 0
    for _ in range(60):
        same = LatencyTest(0.05, weight=0.5)
        for _ in range(800):
            arm = "canary" if rnd.random() < 0.5 else "baseline"
            if same.observe(arm, rnd.lognormvariate(-5, 0.3)).canary_worse:
                false += 1
                break
    assert false <= 8, false  # 60 runs at alpha 0.05: 3 expected at most, +3 sd


def test_ratio_grid() -> None:
    grid = ratio_grid(2.0, 1e4, 8)
    assert grid[0] == 2.0 and grid[-1] == pytest.approx(1e4) and len(grid) == 8
    with pytest.raises(ValueError):
        ratio_grid(1.0)


def latency_stream(
    rnd: random.Random, test: LatencyTest, slower: float, weight: float, horizon: int
) -> int | None:
    """Log-normal latencies (median 50 ms, sigma 0.5) routed at ``weight``, the canary's
    times ``slower``; the test looked at after every request. Canary requests at detection."""
    return _stream(rnd, test, _lognormal, slower, weight, horizon)


def _lognormal(rnd: random.Random) -> float:
    return rnd.lognormvariate(math.log(0.05), 0.5)


@pytest.mark.parametrize("weight, horizon", [(0.5, 150), (0.05, 40)])
def test_latency_false_alarm_rate_under_continuous_monitoring(weight: float, horizon: int) -> None:
    """Safety test: same latency distribution on both sides, looked at after every request.
    Mutation tried: ``LatencyTest._decide`` without the prior weights (the sum of the
    alternatives' likelihood ratios as the statistic, not their weighted mean): 69/200 false
    alarms at weight 0.5 and 55/200 at 0.05 (limit 0.05 + 3 sd, 19.2/200: both fail; 7/200
    and 6/200 without the mutation)."""
    rnd = random.Random(20261207)
    runs, alpha = 200, 0.05
    false = sum(
        latency_stream(rnd, LatencyTest(alpha, weight=weight), 1.0, weight, horizon) is not None
        for _ in range(runs)
    )
    assert false / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), false


def test_latency_test_finds_a_canary_30_percent_slower_at_five_percent_weight() -> None:
    """p95 (every quantile) +30% at a 5% router weight: found after a median of at most 50
    canary requests (43 here; the binned estimate of 2026-12-07: 55; the slow-request test
    alone: ~170; Wald's SPRT knowing both distributions: ~30, see
    bench/canary_sequential.py). Mutation tried: the previous LatencyTest restored (quantile
    bins of the baseline, up to 16, instead of the kernel density ratio, and its prior):
    median 55, fails."""
    rnd = random.Random(4)
    at = [latency_stream(rnd, LatencyTest(0.01, weight=0.05), 1.3, 0.05, 400) for _ in range(40)]
    found = sorted(n for n in at if n is not None)
    assert len(found) == 40, len(found)
    assert found[len(found) // 2] <= 50, found


def _bimodal(rnd: random.Random) -> float:
    """80% cache hits around 10 ms, 20% misses around 200 ms."""
    if rnd.random() < 0.8:
        return rnd.lognormvariate(math.log(0.01), 0.2)
    return rnd.lognormvariate(math.log(0.2), 0.3)


def _tied(rnd: random.Random) -> float:
    """Log-normal latencies logged to the millisecond (many ties), some of them 0."""
    return round(rnd.lognormvariate(math.log(0.004), 0.8), 3)


def _stream(
    rnd: random.Random,
    test: LatencyTest,
    latency: Callable[[random.Random], float],
    slower: float,
    weight: float,
    horizon: int,
) -> int | None:
    """Requests routed to the canary at ``weight``, each latency drawn by ``latency``, the
    canary's times ``slower``; the test looked at after every request. Canary requests at
    detection (None: not found within ``horizon`` of them)."""
    cn = 0
    while cn < horizon:
        arm: Literal["canary", "baseline"] = "canary" if rnd.random() < weight else "baseline"
        x = latency(rnd) * (slower if arm == "canary" else 1.0)
        cn += arm == "canary"
        if test.observe(arm, x).canary_worse:
            return cn
    return None


@pytest.mark.parametrize("latency", [_bimodal, _tied], ids=["bimodal", "tied"])
def test_latency_false_alarms_on_latencies_that_are_not_log_normal(
    latency: Callable[[random.Random], float],
) -> None:
    """Safety test: two modes, or latencies logged to the millisecond (ties, zeros); the same
    distribution on both sides at a 20% weight, looked at after every request (2/150 and
    4/150 false alarms here, limit 15.5). Mutation tried: a canary request's bet divided by
    0.8 w instead of w (a router weight taken 20% off): 149/150 and 150/150, both fail.
    Dropping the bets on baseline requests is NOT such a mutation: with bets that average 1
    over the baseline, a canary request's bet alone is still a supermartingale."""
    rnd = random.Random(20261208)
    runs, alpha = 150, 0.05
    false = sum(
        _stream(rnd, LatencyTest(alpha, weight=0.2), latency, 1.0, 0.2, 60) is not None
        for _ in range(runs)
    )
    assert false / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), false


def test_latency_test_finds_a_slower_canary_among_two_modes() -> None:
    """Every latency 30% slower, over a baseline of cache hits and misses: the density
    estimate follows both modes (median 11 canary requests here). Mutation tried: the
    previous LatencyTest restored (quantile bins of the baseline, up to 16): median 18, fails."""
    rnd = random.Random(5)
    at = [_stream(rnd, LatencyTest(0.01, weight=0.05), _bimodal, 1.3, 0.05, 400) for _ in range(40)]
    found = sorted(n for n in at if n is not None)
    assert len(found) == 40, len(found)
    assert found[len(found) // 2] <= 14, found


def test_latency_test_with_a_baseline_of_identical_latencies() -> None:
    """A baseline that always takes exactly 5 ms: no density to estimate (the kernel's width
    has a floor), no alarm while the canary takes 5 ms too, and a canary at 6 ms is found (by
    the slow-request alternatives: every canary request is slower than the baseline's p95).
    Mutation tried: no floor on the kernel's width: ZeroDivisionError, fails. Not a guard of
    the scaling of the bets to average 1: without it the shift alternatives bet against
    the canary here, and the slow-request alternatives still find it (passes)."""
    rnd = random.Random(6)
    same = LatencyTest(0.01, weight=0.5)
    for _ in range(2000):
        same.observe("canary" if rnd.random() < 0.5 else "baseline", 0.005)
    assert same.decision.verdict != "canary_worse", same.decision
    slow = LatencyTest(0.01, weight=0.5)
    seen = 0
    for _ in range(400):
        arm: Literal["canary", "baseline"] = "canary" if rnd.random() < 0.5 else "baseline"
        seen += arm == "canary"
        if slow.observe(arm, 0.006 if arm == "canary" else 0.005).canary_worse:
            break
    assert slow.decision.canary_worse and seen <= 60, seen


def test_latency_test_refuses_a_latency_that_is_not_a_number() -> None:
    """An infinite or NaN latency is an error, not a request (it would break the density
    estimate). Mutation tried: the check removed: fails."""
    test = LatencyTest(0.01, weight=0.5)
    for bad in (math.inf, math.nan):
        with pytest.raises(ValueError, match="finite"):
            test.observe("canary", bad)
    assert test.decision.canary_n == 0
