"""Sequential tests that stay valid when they are looked at after every request.

The canary is judged on streams of requests that keep arriving, and tminus wants to stop as
soon as the evidence is there. A fixed-sample test (a z-test, a threshold on a window) looked
at again and again fails far more often than its nominal level; these tests do not. Each is
a *mixture likelihood ratio*: a non-negative martingale under the null hypothesis, so by
Ville's inequality the probability that it EVER reaches ``1/alpha``, however often it is
looked at and whenever one stops, is at most ``alpha`` (Robbins 1970; Johari, Pekelis and
Walsh, "Always valid inference", 2017/2022). docs/analysis.md has the derivations.

- :class:`SequentialTest` compares the canary's error rate with the baseline's. Each request
  goes to the canary with a known probability ``w`` (a router's weight, or the probe's coin),
  so under "the canary is no worse" every error is a canary error with probability at most
  ``w``, whatever the error rate is: the unknown baseline rate drops out (the thinning
  argument of Lindon and Malek, "Anytime-valid inference for multinomial count data", 2022).
  The alternative is a mixture over error-rate ratios ``rho`` from ``1 + min_effect`` up.
- :class:`OneSampleTest` asks whether the canary's error rate exceeds a fixed rate ``p0``
  (no baseline).
- :class:`LatencyTest` bets on the side of every request given its latency: under "same
  latency distribution" a request of any latency is a canary request with probability
  ``w``. Its alternatives are "the canary is s times slower", judged against a density
  estimate of the baseline's earlier latencies, and "more canary requests slower than the
  baseline's running p95" (a threshold fixed before each request, applied to both arms).

Pure Python (``math`` only).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Decision",
    "LatencyTest",
    "OneSampleTest",
    "SequentialTest",
    "Verdict",
    "ratio_grid",
]

Verdict = Literal["continue", "canary_worse", "no_difference"]

#: Largest error-rate ratio in the mixture: a canary failing every request against a
#: baseline at 0.01% errors.
MAX_RATIO = 1e4
#: Number of ratios in the mixture (geometric grid).
COMPONENTS = 8
#: Each ratio's prior weight over the next smaller ratio's. An error at a large ratio is
#: nearly surely the canary's, so a large regression is found within a few errors whatever
#: its weight; the small ones, which take thousands of requests, get the weight instead.
PRIOR_DECAY = 2 / 3
_EXP_CAP = 700.0  # math.exp overflows past ~709
#: Largest canary error rate an alternative bets on for requests without an error.
SUCCESS_CAP = 0.5


def ratio_grid(min_ratio: float, max_ratio: float = MAX_RATIO, n: int = COMPONENTS) -> list[float]:
    """``n`` ratios spaced geometrically from ``min_ratio`` to ``max_ratio``."""
    if not 1.0 < min_ratio <= max_ratio:
        raise ValueError(f"need 1 < min_ratio <= max_ratio, got {min_ratio}, {max_ratio}")
    if n == 1 or min_ratio == max_ratio:
        return [min_ratio]
    step = (max_ratio / min_ratio) ** (1.0 / (n - 1))
    return [min_ratio * step**i for i in range(n)]


@dataclass(frozen=True)
class Decision:
    """Where a sequential test stands after an update."""

    verdict: Verdict
    statistic: float  # the mixture likelihood ratio (an e-value); canary_worse at >= threshold
    threshold: float  # 1 / alpha
    p_value: float  # always-valid p-value: min(1, 1 / the largest statistic so far)
    canary_errors: int = 0
    canary_n: int = 0
    baseline_errors: int = 0
    baseline_n: int = 0

    @property
    def canary_worse(self) -> bool:
        return self.verdict == "canary_worse"

    @property
    def log_statistic(self) -> float:
        return math.log(self.statistic) if self.statistic > 0 else -math.inf


class _OddsMixture:
    """Sum over components k of prior_k * prod_i LR_k(obs_i) for Bernoulli observations.

    Under the null an observation is a "hit" with probability at most ``p0`` (which may change
    between updates, as long as it is fixed before the observations it applies to); component
    k's alternative multiplies the odds of a hit by ``ratios[k]``.
    """

    def __init__(self, ratios: list[float]) -> None:
        self.ratios = ratios
        weights = [PRIOR_DECAY**k for k in range(len(ratios))]
        log_total = math.log(sum(weights))
        self.log_prior = [math.log(x) - log_total for x in weights]
        self.log_lr = [0.0] * len(ratios)
        self._cached: float | None = 0.0  # log_value(), None when stale
        self._coef: dict[float, list[tuple[float, float]]] = {}  # p0 -> per-component logs
        self._success: dict[tuple[float, float], list[tuple[float, float]]] = {}

    def add(self, hits: int, misses: int, p0: float) -> None:
        if hits == 0 and misses == 0:
            return
        coef = self._coef.get(p0)
        if coef is None:
            if not 0.0 < p0 < 1.0:
                raise ValueError(f"null probability must be in (0, 1), got {p0}")
            coef = []
            for rho in self.ratios:
                q = p0 * rho / (p0 * rho + 1.0 - p0)
                coef.append((math.log(q / p0), math.log((1.0 - q) / (1.0 - p0))))
            if len(self._coef) > 64:  # a plug-in weight changes at every update
                self._coef.clear()
            self._coef[p0] = coef
        for k, (hit, miss) in enumerate(coef):
            self.log_lr[k] += hits * hit + misses * miss
        self._cached = None

    def add_successes(self, canary: int, baseline: int, w: float, p: float) -> None:
        """Requests without an error: under component k the canary's error rate is
        ``ratios[k] * p`` (capped at :data:`SUCCESS_CAP`), so a success is a canary request with
        probability q < w; under the null (canary no worse) it is one with probability >= w."""
        if canary == 0 and baseline == 0:
            return
        coef = self._success.get((w, p))
        if coef is None:
            coef = []
            for rho in self.ratios:
                pc = min(rho * p, SUCCESS_CAP)
                q = w * (1.0 - pc) / (w * (1.0 - pc) + (1.0 - w) * (1.0 - p))
                coef.append((math.log(q / w), math.log((1.0 - q) / (1.0 - w))))
            if len(self._success) > 64:
                self._success.clear()
            self._success[(w, p)] = coef
        for k, (c, b) in enumerate(coef):
            self.log_lr[k] += canary * c + baseline * b
        self._cached = None

    def log_value(self) -> float:
        if self._cached is not None:
            return self._cached
        terms = [lp + ll for lp, ll in zip(self.log_prior, self.log_lr, strict=True)]
        top = max(terms)
        self._cached = top + math.log(sum(math.exp(t - top) for t in terms))
        return self._cached

    def log_first(self) -> float:
        """Log likelihood ratio of the smallest ratio alone (Wald's SPRT at min_effect)."""
        return self.log_lr[0]


class _Base:
    def __init__(self, alpha: float, beta: float, min_effect: float) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if not 0.0 < beta < 1.0:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        if min_effect <= 0.0:
            raise ValueError(f"min_effect must be > 0, got {min_effect}")
        self.alpha = alpha
        self.beta = beta
        self.min_effect = min_effect
        self._mix = _OddsMixture(ratio_grid(1.0 + min_effect))
        self._upper = math.log(1.0 / alpha)
        self._lower = math.log(beta / (1.0 - alpha))  # Wald's lower boundary, for no_difference
        self._max_log = 0.0
        self._worse = False
        self._counts = (0, 0, 0, 0)

    def _decide(self) -> Decision:
        log_stat = self._mix.log_value()
        self._max_log = max(self._max_log, log_stat)
        if log_stat >= self._upper:
            self._worse = True
        if self._worse:
            verdict: Verdict = "canary_worse"
        elif self._mix.log_first() <= self._lower:
            verdict = "no_difference"
        else:
            verdict = "continue"
        ce, cn, be, bn = self._counts
        return Decision(
            verdict=verdict,
            statistic=math.exp(min(log_stat, _EXP_CAP)),
            threshold=1.0 / self.alpha,
            p_value=min(1.0, math.exp(-self._max_log)),
            canary_errors=ce,
            canary_n=cn,
            baseline_errors=be,
            baseline_n=bn,
        )

    def _increments(
        self, canary_errors: int, canary_n: int, baseline_errors: int, baseline_n: int
    ) -> tuple[int, int, int, int]:
        new = (canary_errors, canary_n, baseline_errors, baseline_n)
        if any(v < 0 for v in new):
            raise ValueError(f"counts must be >= 0, got {new}")
        if canary_errors > canary_n or baseline_errors > baseline_n:
            raise ValueError(f"more errors than requests: {new}")
        old = self._counts
        delta = tuple(n - o for n, o in zip(new, old, strict=True))
        if any(d < 0 for d in delta):
            raise ValueError(
                f"cumulative counts went down ({old} -> {new}): a counter reset? start a new test"
            )
        self._counts = new
        return delta[0], delta[1], delta[2], delta[3]

    @property
    def decided(self) -> bool:
        """True once the test has concluded that the canary is worse (that is final)."""
        return self._worse


class SequentialTest(_Base):
    """Is the canary's error rate higher than the baseline's? Valid under continuous monitoring.

    ``update`` takes CUMULATIVE counts (errors and requests of each arm so far) and may be
    called after every request or every minute. ``weight`` is the probability that a request
    goes to the canary (0.05 for a 5% router weight, 0.5 for the probe's coin); the
    false-positive bound ``alpha`` is exact when requests are assigned that way. Without
    ``weight`` the canary's share of requests counted so far stands in for it (a plug-in:
    close when counts are large, no longer exact).

    Null hypothesis: the canary's error rate is at most the baseline's. ``canary_worse`` is
    final once reached; ``no_difference`` means Wald's SPRT at ``min_effect`` currently
    favours "no worse than 1 + min_effect times the baseline" (error ~ ``beta``), and may change.
    """

    def __init__(
        self,
        alpha: float = 0.01,
        beta: float = 0.2,
        min_effect: float = 1.0,
        *,
        weight: float | None = None,
    ) -> None:
        super().__init__(alpha, beta, min_effect)
        if weight is not None and not 0.0 < weight < 1.0:
            raise ValueError(f"weight must be in (0, 1), got {weight}")
        self.weight = weight

    def update(
        self, canary_errors: int, canary_n: int, baseline_errors: int = 0, baseline_n: int = 0
    ) -> Decision:
        _, prev_cn, prev_be, prev_bn = self._counts
        dce, dcn, dbe, dbn = self._increments(canary_errors, canary_n, baseline_errors, baseline_n)
        w = self.weight
        if w is None:
            if prev_cn > 0 and prev_bn > 0:  # share before this increment: fixed beforehand
                w = prev_cn / (prev_cn + prev_bn)
            elif canary_n > 0 and baseline_n > 0:
                w = canary_n / (canary_n + baseline_n)
        if w is not None:
            self._mix.add(dce, dbe, w)
            # the baseline's error rate so far, on the low side (less than one standard
            # deviation below), fixed before these requests: zero until it has errors
            rate = (prev_be - math.sqrt(prev_be)) / prev_bn if prev_bn else 0.0
            if rate > 0.0:  # rounded down to a 5% grid (log scale), so the bets are reused
                rate = math.exp(math.floor(math.log(rate) * 20.0) / 20.0)
                self._mix.add_successes(dcn - dce, dbn - dbe, w, rate)
        return self._decide()


class OneSampleTest(_Base):
    """Is the canary's error rate above ``p0``? For a canary probed without a baseline.

    Null hypothesis: error rate <= ``p0``; the mixture is over odds ratios from
    ``1 + min_effect`` up. ``update`` takes cumulative counts; baseline counts are ignored.
    """

    def __init__(
        self, p0: float, alpha: float = 0.01, beta: float = 0.2, min_effect: float = 1.0
    ) -> None:
        super().__init__(alpha, beta, min_effect)
        if not 0.0 < p0 < 1.0:
            raise ValueError(f"p0 must be in (0, 1), got {p0}")
        self.p0 = p0

    def update(
        self, canary_errors: int, canary_n: int, baseline_errors: int = 0, baseline_n: int = 0
    ) -> Decision:
        dce, dcn, _, _ = self._increments(canary_errors, canary_n, 0, 0)
        self._mix.add(dce, dcn - dce, self.p0)
        return self._decide()


#: Scale factors of the latency test's shift alternatives ("every canary latency is the
#: baseline's times s"): log s = 0.1 * sqrt(2)**k, from 0.1 to 1.13 (s = 1.11 to 3.1), spaced
#: so that the nearest one to any s in 1.1-3 grows at >= 97% of the exact alternative's rate
#: (log-normal latencies). A larger slowdown puts canary requests past the baseline's slowest,
#: where the largest scale already bets all it may: it is found in a few requests.
SCALES = tuple(math.exp(0.1 * 2 ** (k / 2)) for k in range(8))
#: Share of the latency test's prior on the shift alternatives, equal weights (the rest: the
#: slow-request odds ratios of the tail family).
SHIFT_SHARE = 0.95
#: Points of the grid of log latencies on which each shift alternative's bets are tabulated.
GRID = 64
#: Kernel bandwidth of the baseline's density estimate: this times Silverman's rule of thumb.
BANDWIDTH = 1.3
_MIN_BANDWIDTH = 0.01  # in log seconds: 1% (a baseline of identical latencies)
_SMOOTH = 0.1  # each shift alternative's density ratio mixed with the null's 1 (no zero bet)
_MAX_RATIO = 1e6  # a density ratio's bounds (the estimate's tails, numerically)
_TINY = 1e-9  # seconds: a latency of 0 is taken as 1 ns (its log)


class LatencyTest:
    """Are canary requests slower than the baseline's? Valid under continuous monitoring.

    Feed requests in the order they were assigned (``observe(arm, seconds)``, or
    ``observe_many`` for a batch). Each request is judged against the baseline latencies
    observed BEFORE it (once there are ``min_baseline``): where its latency falls in their
    distribution, and whether it is slower than their ``quantile`` (p95). Under "same latency
    distribution" the request's side is independent of its latency, so whatever its latency,
    it is a canary request with probability ``weight``; each alternative bets on the side
    given the latency, and the product of its bets is a martingale (the thinning argument of
    :class:`SequentialTest`, applied to every request, not only errors). Two families of
    alternatives, mixed:

    - shift (``SHIFT_SHARE`` of the prior): the canary's latencies are the baseline's times
      ``s`` for ``s`` in :data:`SCALES`; the bet on a request is the density ratio
      ``f(log x - log s) / f(log x)`` of a kernel estimate of the baseline's log latencies
      (see ``_fit``), so a slow request counts for "canary slower", a fast one against, each
      by how much more likely its latency is under ``s``;
    - tail (the rest): slower than the baseline's p95 with odds ratio ``rho`` from
      ``1 + min_effect`` up (the test before 2026-12, kept for regressions of the tail only).

    The bets are fixed before the requests they apply to (recomputed as the baseline grows by
    a quarter), so validity does not depend on how well they estimate anything.
    """

    def __init__(
        self,
        alpha: float = 0.01,
        beta: float = 0.2,
        min_effect: float = 1.0,
        *,
        weight: float,
        quantile: float = 0.95,
        min_baseline: int = 20,
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        self.tail = SequentialTest(alpha, beta, min_effect, weight=weight)
        self.weight = weight
        self.alpha = alpha
        self.quantile = quantile
        self.min_baseline = max(1, min_baseline)
        self._baseline: list[float] = []
        self._slow = [0, 0]  # canary, baseline
        self._n = [0, 0]
        self._shift = [0.0] * len(SCALES)  # log likelihood ratio of each shift alternative
        self._grid = (0.0, 1.0)  # log seconds of the first point, the spacing
        self._coef: list[tuple[list[float], list[float]]] = []  # per scale: canary, baseline
        self._fitted_at = 0
        self._max_log = 0.0
        self._worse = False
        self.decision = self._decide()

    @property
    def threshold(self) -> float | None:
        """The current slow threshold in seconds (None until enough baseline latencies)."""
        if len(self._baseline) < self.min_baseline:
            return None
        i = max(0, math.ceil(self.quantile * len(self._baseline)) - 1)
        return self._baseline[i]

    def _fit(self) -> None:
        """Each shift alternative's bets, tabulated on a grid of log latencies from the
        baseline's so far: r(y) = f(y - log s) / f(y), f a Gaussian kernel estimate of the
        baseline's log-latency density. r is taken at the nearest of the baseline's fastest
        and slowest for latencies outside them (the estimate's tails would bet without
        data), then scaled to average 1 over the baseline (a proper alternative: under it a
        request is as likely in all as under the null)."""
        ys = [math.log(max(v, _TINY)) for v in self._baseline]  # sorted, as the baseline is
        n = len(ys)
        mean = sum(ys) / n
        sd = math.sqrt(sum((y - mean) ** 2 for y in ys) / max(1, n - 1))
        iqr = ys[(3 * n) // 4] - ys[n // 4]
        h = max(BANDWIDTH * min(sd, iqr / 1.34 if iqr > 0 else sd) * n**-0.2, _MIN_BANDWIDTH)
        lo = ys[0] - 4 * h
        step = (ys[-1] + 4 * h - lo) / (GRID - 1)
        counts = [0.0] * GRID  # linear binning
        for y in ys:
            t = (y - lo) / step
            i = min(int(t), GRID - 2)
            counts[i] += i + 1 - t
            counts[i + 1] += t - i
        reach = int(4 * h / step) + 1
        kernel = [math.exp(-0.5 * (j * step / h) ** 2) for j in range(-reach, reach + 1)]
        dens = [0.0] * GRID
        for i, c in enumerate(counts):
            if c:
                for j in range(max(0, i - reach), min(GRID, i + reach + 1)):
                    dens[j] += c * kernel[j - i + reach]

        def density(y: float) -> float:
            t = min(max((y - lo) / step, 0.0), GRID - 1.0)
            i = min(int(t), GRID - 2)
            v: float = dens[i] * (i + 1 - t) + dens[i + 1] * (t - i)
            return v if v > 1e-300 else 1e-300

        w = self.weight
        self._grid = (lo, step)
        self._coef = []
        at = [min(max(lo + i * step, ys[0]), ys[-1]) for i in range(GRID)]
        null = [density(y) for y in at]
        for s in SCALES:
            shift = math.log(s)
            ratio = [
                min(max(density(y - shift) / f, 1.0 / _MAX_RATIO), _MAX_RATIO)
                for y, f in zip(at, null, strict=True)
            ]
            norm = sum(c * r for c, r in zip(counts, ratio, strict=True)) / n
            canary, baseline = [], []
            for r in ratio:
                p = (1 - _SMOOTH) * r / norm + _SMOOTH
                q = w * p / (w * p + 1 - w)
                canary.append(math.log(q / w))
                baseline.append(math.log((1 - q) / (1 - w)))
            self._coef.append((canary, baseline))
        self._fitted_at = n

    def observe(self, arm: Literal["canary", "baseline"], seconds: float) -> Decision:
        if arm == "canary":
            return self.observe_many([seconds], [])
        return self.observe_many([], [seconds])

    def observe_many(self, canary: Sequence[float], baseline: Sequence[float]) -> Decision:
        """A batch of requests (assigned after every request already observed), classified
        against the baseline latencies before the batch; the decision after it."""
        if not all(math.isfinite(x) for xs in (canary, baseline) for x in xs):
            raise ValueError("latencies must be finite numbers of seconds")
        limit = self.threshold
        if limit is not None:
            n = len(self._baseline)
            if n >= self._fitted_at * 1.25 or not self._coef:
                self._fit()
            shift, (lo, step) = self._shift, self._grid
            for idx, xs in ((0, canary), (1, baseline)):
                for x in xs:
                    t = (math.log(max(x, _TINY)) - lo) / step
                    j = GRID - 1 if t >= GRID - 1 else (round(t) if t > 0 else 0)
                    for k, coef in enumerate(self._coef):
                        shift[k] += coef[idx][j]
                    self._slow[idx] += x > limit
                self._n[idx] += len(xs)
            self.tail.update(self._slow[0], self._n[0], self._slow[1], self._n[1])
        for x in baseline:
            bisect.insort(self._baseline, x)
        self.decision = self._decide()
        return self.decision

    def _decide(self) -> Decision:
        terms = [math.log(SHIFT_SHARE / len(SCALES)) + v for v in self._shift]
        terms.append(math.log(1 - SHIFT_SHARE) + self.tail._mix.log_value())
        top = max(terms)
        log_stat = top + math.log(sum(math.exp(t - top) for t in terms))
        self._max_log = max(self._max_log, log_stat)
        if log_stat >= math.log(1.0 / self.alpha):
            self._worse = True
        tail = self.tail.update(self._slow[0], self._n[0], self._slow[1], self._n[1])
        verdict: Verdict = "canary_worse" if self._worse else tail.verdict
        if verdict == "canary_worse" and not self._worse:
            verdict = "continue"
        return Decision(
            verdict=verdict,
            statistic=math.exp(min(log_stat, _EXP_CAP)),
            threshold=1.0 / self.alpha,
            p_value=min(1.0, math.exp(-self._max_log)),
            canary_errors=self._slow[0],
            canary_n=self._n[0],
            baseline_errors=self._slow[1],
            baseline_n=self._n[1],
        )
