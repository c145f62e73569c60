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
- :class:`LatencyTest` runs :class:`SequentialTest` on "slow" requests: slower than the
  baseline's running p95, a threshold fixed before each request is classified and applied to
  both arms alike, so under "same latency" a slow request is again a canary request with
  probability ``w``.

Pure Python (``math`` only).
"""

from __future__ import annotations

import bisect
import math
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
#: Number of ratios in the mixture (geometric grid, equal prior weights).
COMPONENTS = 8
_EXP_CAP = 700.0  # math.exp overflows past ~709


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
        self.log_prior = [-math.log(len(ratios))] * len(ratios)
        self.log_lr = [0.0] * len(ratios)
        self._cached: float | None = 0.0  # log_value(), None when stale
        self._coef: dict[float, list[tuple[float, float]]] = {}  # p0 -> per-component logs

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
        prev_cn, prev_bn = self._counts[1], self._counts[3]
        dce, _dcn, dbe, _dbn = self._increments(
            canary_errors, canary_n, baseline_errors, baseline_n
        )
        w = self.weight
        if w is None:
            if prev_cn > 0 and prev_bn > 0:  # share before this increment: fixed beforehand
                w = prev_cn / (prev_cn + prev_bn)
            elif canary_n > 0 and baseline_n > 0:
                w = canary_n / (canary_n + baseline_n)
        if w is not None:
            self._mix.add(dce, dbe, w)
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


class LatencyTest:
    """Are canary requests slower than the baseline's? A :class:`SequentialTest` on slow ones.

    Feed requests in the order they were assigned (``observe(arm, seconds)``). Once
    ``min_baseline`` baseline latencies are known, each request is classified "slow" when its
    latency exceeds the ``quantile`` of the baseline latencies observed BEFORE it. Under "same
    latency distribution" a slow request is a canary request with probability ``weight``.
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
        self.test = SequentialTest(alpha, beta, min_effect, weight=weight)
        self.quantile = quantile
        self.min_baseline = max(1, min_baseline)
        self._baseline: list[float] = []
        self._slow = [0, 0]  # canary, baseline
        self._n = [0, 0]
        self.decision = self.test.update(0, 0, 0, 0)

    @property
    def threshold(self) -> float | None:
        """The current slow threshold in seconds (None until enough baseline latencies)."""
        if len(self._baseline) < self.min_baseline:
            return None
        i = max(0, math.ceil(self.quantile * len(self._baseline)) - 1)
        return self._baseline[i]

    def observe(self, arm: Literal["canary", "baseline"], seconds: float) -> Decision:
        limit = self.threshold
        idx = 0 if arm == "canary" else 1
        if limit is not None:
            self._n[idx] += 1
            if seconds > limit:
                self._slow[idx] += 1
            self.decision = self.test.update(self._slow[0], self._n[0], self._slow[1], self._n[1])
        if arm == "baseline":
            bisect.insort(self._baseline, seconds)
        return self.decision
