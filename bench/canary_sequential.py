"""Canary analysis, part (b): a subtle regression caught by tminus's sequential test and by a
fixed-window threshold check, on simulated request streams.

    uv run python bench/canary_sequential.py [--seed 1] [--runs 200] [--aa-runs 100]

Scenario: a router sends each request to the canary with probability 5% (its weight). The
baseline fails 0.5% of requests; the regressed canary 3% (A/A: 0.5% too). Two checks watch
the same streams (common random numbers):

- **sequential**: :class:`tminus.sources.sequential.SequentialTest` (alpha 0.01, weight
  0.05), updated after every request;
- **fixed window** (Flagger-like): after every N canary requests, fail if the canary's error
  rate in that window exceeds a threshold: 1% with N = 200 and N = 1000, and 2% with
  N = 1000 (a threshold raised until false positives are rare).

Reported: canary requests until detection (median, p90, share detected) over ``runs``
regressed streams, and the false-positive rate over ``aa_runs`` A/A streams of 20,000
canary requests each (about 400,000 requests at 5%). Canary requests and baseline errors
are simulated one by one, the baseline's successful requests in runs (geometric) between
them; the sequential test bets on successes too, so it is looked at after each run.

**Against the best possible** (``run_oracle``, printed after part (b); ``--oracle-runs``,
``--oracle-aa-runs``, default 1,000 each, a few minutes on a quiet core): on the same streams
(one seed per stream), tminus's tests against Wald's SPRT that knows both distributions
(thresholds log((1-beta)/alpha) and log(beta/(1-alpha)), alpha 0.01, beta 0.2):

- errors, same scenario: Wald's SPRT on the canary's requests knowing 0.5% and 3% (it needs
  no baseline), and on which version each error hit (``oracle_thinned``); A/A horizon 2,000
  canary requests;
- latency: log-normal latencies (median 50 ms, sigma 0.5), the regressed canary 30% slower
  at every quantile (p95 +30%), 5% weight; :class:`~tminus.sources.sequential.LatencyTest`
  sees every request, Wald's SPRT the canary's latencies with both densities; A/A horizon
  300 canary requests (6,000 requests).

Reported per test: median canary requests to detection over all regressed runs (a run the
SPRT closes at H0 counts as never), over the detected runs only, the share detected, A/A
false alarms, and tminus's median over the oracle's (both ways).

From another script (``bench/`` is not a package)::

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # the bench/ directory
    from canary_sequential import run_part_b
    figures = run_part_b(seed=1, runs=200)   # a dict, see run_part_b; print_table(figures)

Figures are printed, not asserted. Fixed seed; part (b) ~1 minute on one core.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tminus.sources.sequential import SequentialTest

WEIGHT = 0.05
BASELINE_RATE = 0.005
CANARY_RATE = 0.03
ALPHA = 0.01
#: (canary requests per window, error-rate threshold) of the fixed-window checks
WINDOWS = ((200, 0.01), (1000, 0.01), (1000, 0.02))
HORIZON = 20_000


@dataclass
class _Run:
    sequential: int | None = None  # canary requests at detection
    windows: dict[tuple[int, float], int | None] | None = None


def _stream(rnd: random.Random, p_canary: float, horizon: int) -> _Run:
    """One stream, both checks watching it; stops when every check has fired or at horizon.
    The baseline's successful requests come in runs (geometric) between events (a canary
    request or a baseline error); the sequential test, which bets on successes too, is looked
    at after each run and after each event: that is after every request."""
    test = SequentialTest(ALPHA, weight=WEIGHT)
    run = _Run(windows={w: None for w in WINDOWS})
    assert run.windows is not None
    window_errors = {w: 0 for w in WINDOWS}
    ce = cn = be = bn = 0
    event = WEIGHT + (1 - WEIGHT) * BASELINE_RATE  # a canary request, or a baseline error
    while cn < horizon:
        k = _geometric(rnd, event)
        if k:
            bn += k
            if run.sequential is None and test.update(ce, cn, be, bn).canary_worse:
                run.sequential = cn
        if rnd.random() < WEIGHT / event:
            cn += 1
            error = rnd.random() < p_canary
            ce += error
            for w in WINDOWS:
                n, threshold = w
                window_errors[w] += error
                if cn % n == 0:
                    if run.windows[w] is None and window_errors[w] / n > threshold:
                        run.windows[w] = cn
                    window_errors[w] = 0
        else:
            be += 1
            bn += 1
        if run.sequential is None and test.update(ce, cn, be, bn).canary_worse:
            run.sequential = cn
        if run.sequential is not None and all(v is not None for v in run.windows.values()):
            break
    return run


def _summary(found: list[int | None]) -> dict[str, Any]:
    ordered = sorted(math.inf if f is None else f for f in found)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1)]

    detected = sum(f is not None for f in found)
    return {
        "median": pct(0.5),
        "p90": pct(0.9),
        "detected": detected / len(found),
        "runs": len(found),
    }


def run_part_b(seed: int = 1, runs: int = 200, aa_runs: int = 100) -> dict[str, Any]:
    """Detection (canary requests) and A/A false positives for each check.

    Returns ``{"scenario": {...}, "checks": {name: {"median", "p90", "detected",
    "false_positive_rate", "false_positives", "aa_runs", ...}}, "seconds": s}``; a median or
    p90 of ``inf`` means not detected within the horizon.
    """
    t0 = time.perf_counter()
    rnd = random.Random(seed)
    regressed = [_stream(rnd, CANARY_RATE, HORIZON) for _ in range(runs)]
    aa = [_stream(rnd, BASELINE_RATE, HORIZON) for _ in range(aa_runs)]
    names: dict[str, tuple[str, tuple[int, float] | None]] = {
        "sequential": (f"sequential (alpha {ALPHA:g})", None)
    }
    for n, threshold in WINDOWS:
        names[f"window_{n}_{threshold:g}"] = (
            f"fixed window {n}, > {threshold:.0%}",
            (n, threshold),
        )
    checks: dict[str, Any] = {}
    for key, (label, window) in names.items():

        def at(r: _Run, window: tuple[int, float] | None = window) -> int | None:
            if window is None:
                return r.sequential
            assert r.windows is not None
            return r.windows[window]

        row = _summary([at(r) for r in regressed])
        false = sum(at(r) is not None for r in aa)
        row.update(
            label=label,
            false_positives=false,
            aa_runs=aa_runs,
            false_positive_rate=false / aa_runs,
        )
        checks[key] = row
    return {
        "scenario": {
            "weight": WEIGHT,
            "baseline_rate": BASELINE_RATE,
            "canary_rate": CANARY_RATE,
            "horizon_canary_requests": HORIZON,
            "seed": seed,
        },
        "checks": checks,
        "seconds": time.perf_counter() - t0,
    }


# --- against the best possible: Wald's SPRT that knows both distributions ------------------
#: Wald's SPRT is given the same alpha and tminus's default beta
BETA = 0.2
#: latency scenario: lognormal latencies (median 50 ms, sigma 0.5 in log); the regressed canary
#: is 30% slower at every quantile (p95 +30%)
LAT_MU, LAT_SIGMA, LAT_SLOWER = math.log(0.05), 0.5, 1.3


class Wald:
    """Wald's SPRT of H0 against H1, both known: stops at log((1-beta)/alpha) (H1) or at
    log(beta/(1-alpha)) (H0). ``step`` adds one observation's log-likelihood ratio."""

    def __init__(self, alpha: float = ALPHA, beta: float = BETA) -> None:
        self.upper = math.log((1 - beta) / alpha)
        self.lower = math.log(beta / (1 - alpha))
        self.llr = 0.0
        self.result: bool | None = None  # True: H1 (canary worse), False: H0

    def step(self, llr: float) -> None:
        if self.result is None:
            self.llr += llr
            if self.llr >= self.upper:
                self.result = True
            elif self.llr <= self.lower:
                self.result = False


def _geometric(rnd: random.Random, p: float) -> int:
    """Failures before the first success of a coin with success probability p."""
    return int(math.log(1.0 - rnd.random()) / math.log(1.0 - p))


def _errors_stream(
    rnd: random.Random, test: Any, p_canary: float, horizon: int
) -> dict[str, int | None]:
    """One routed stream (weight WEIGHT, baseline BASELINE_RATE) watched by tminus's ``test``
    and two oracles; canary requests at each one's detection (None: none, or H0 accepted).

    - ``oracle``: Wald's SPRT on the canary's requests, knowing the baseline rate p0 and the
      canary's p1 (the best any test can do: it needs no baseline at all);
    - ``oracle_thinned``: Wald's SPRT on which version each error hit, knowing both rates (the
      same observations as tminus's errors-only test, minus the unknowns).

    Baseline requests are simulated in runs of successes (geometric) between events, and
    tminus is looked at before and after each event: its statistic moves monotonically with
    baseline successes, so that is every request.
    """
    w, p0 = WEIGHT, BASELINE_RATE
    oracle, thinned = Wald(), Wald()
    p1 = CANARY_RATE  # the oracles' alternative, also on A/A streams
    hit, miss = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    q1 = w * p1 / (w * p1 + (1 - w) * p0)
    t_hit, t_miss = math.log(q1 / w), math.log((1 - q1) / (1 - w))
    found: dict[str, int | None] = {"tminus": None, "oracle": None, "oracle_thinned": None}
    event = w + (1 - w) * p0  # a canary request, or else a baseline error
    ce = cn = be = bn = 0
    while cn < horizon:
        k = _geometric(rnd, event)
        if k and found["tminus"] is None:
            bn += k
            if test.update(ce, cn, be, bn).canary_worse:
                found["tminus"] = cn
        if rnd.random() < w / event:
            cn += 1
            error = rnd.random() < p_canary
            ce += error
            oracle.step(hit if error else miss)
            if error:
                thinned.step(t_hit)
        else:
            be += 1
            bn += 1
            thinned.step(t_miss)
        for name, o in (("oracle", oracle), ("oracle_thinned", thinned)):
            if o.result and found[name] is None:
                found[name] = cn
        if found["tminus"] is None and test.update(ce, cn, be, bn).canary_worse:
            found["tminus"] = cn
        if (
            found["tminus"] is not None
            and oracle.result is not None
            and (thinned.result is not None)
        ):
            break
    return found


def _latency_stream(
    rnd: random.Random, test: Any, slower: float, horizon: int, *, batched: bool
) -> dict[str, int | None]:
    """One routed stream of latencies (weight WEIGHT): tminus's latency ``test`` and Wald's
    SPRT on the canary's latencies knowing both lognormal distributions; canary requests at
    detection. tminus sees every request (baseline requests in the order they came, each
    canary request after the baseline requests before it) and is looked at after each canary
    request (``batched``: its ``observe_many`` with the requests since the last look)."""
    oracle = Wald()
    d = math.log(LAT_SLOWER)
    found: dict[str, int | None] = {"tminus": None, "oracle": None}
    cn = 0
    while cn < horizon and (found["tminus"] is None or oracle.result is None):
        base = [rnd.lognormvariate(LAT_MU, LAT_SIGMA) for _ in range(_geometric(rnd, WEIGHT))]
        x = rnd.lognormvariate(LAT_MU, LAT_SIGMA) * slower
        cn += 1
        oracle.step(d / LAT_SIGMA**2 * (math.log(x) - LAT_MU - d / 2))
        if oracle.result and found["oracle"] is None:
            found["oracle"] = cn
        if found["tminus"] is None:
            if batched:
                dec = test.observe_many([x], base)
            else:
                for b in base:
                    test.observe("baseline", b)
                dec = test.observe("canary", x)
            if dec.canary_worse:
                found["tminus"] = cn
    return found


def _compare(
    regressed: list[dict[str, int | None]], aa: list[dict[str, int | None]]
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name in regressed[0]:
        row = _summary([r[name] for r in regressed])
        hits = sorted(r[name] for r in regressed if r[name] is not None)
        row["median_detected"] = hits[len(hits) // 2] if hits else math.inf
        fp = sum(r[name] is not None for r in aa)
        row.update(false_positives=fp, aa_runs=len(aa), false_positive_rate=fp / len(aa))
        rows[name] = row
    for row in rows.values():  # each median over all runs: to the oracle's, and to its
        row["ratio"] = row["median"] / rows["oracle"]["median"]  # median over detections
        row["ratio_detected"] = row["median"] / rows["oracle"]["median_detected"]
    return rows


def run_oracle(
    seed: int = 1,
    runs: int = 1000,
    aa_runs: int = 1000,
    aa_horizon: int = 2000,
    lat_aa_horizon: int = 300,
    module: Any = None,
) -> dict[str, Any]:
    """tminus's sequential tests against Wald's SPRT knowing both distributions, errors and
    latency, ``runs`` regressed and ``aa_runs`` A/A streams each (``module``: another
    implementation of tminus.sources.sequential, to compare versions)."""
    if module is None:
        from tminus.sources import sequential as module
    t0 = time.perf_counter()
    out: dict[str, Any] = {"seed": seed}

    def rnd(part: int, i: int) -> random.Random:
        """Stream i of a part: the same random numbers whatever the tests decide."""
        return random.Random(f"{seed}/{part}/{i}")

    def errors_test() -> Any:
        return module.SequentialTest(ALPHA, weight=WEIGHT)

    reg = [_errors_stream(rnd(1, i), errors_test(), CANARY_RATE, HORIZON) for i in range(runs)]
    aa = [_errors_stream(rnd(2, i), errors_test(), BASELINE_RATE, aa_horizon)
          for i in range(aa_runs)]  # fmt: skip
    out["errors"] = _compare(reg, aa)
    batched = hasattr(module.LatencyTest, "observe_many")

    def latency_test() -> Any:
        return module.LatencyTest(ALPHA, weight=WEIGHT)

    reg = [_latency_stream(rnd(3, i), latency_test(), LAT_SLOWER, HORIZON, batched=batched)
           for i in range(runs)]  # fmt: skip
    aa = [_latency_stream(rnd(4, i), latency_test(), 1.0, lat_aa_horizon, batched=batched)
          for i in range(aa_runs)]  # fmt: skip
    out["latency"] = _compare(reg, aa)
    out["horizons"] = {"errors_aa": aa_horizon, "latency_aa": lat_aa_horizon}
    out["seconds"] = time.perf_counter() - t0
    return out


def print_oracle(fig: dict[str, Any]) -> None:
    h = fig["horizons"]
    titles = {
        "errors": f"errors: weight {WEIGHT:.0%}, baseline {BASELINE_RATE:.1%}, canary "
        f"{CANARY_RATE:.0%} (A/A horizon {h['errors_aa']} canary requests)",
        "latency": f"latency: weight {WEIGHT:.0%}, lognormal (median 50 ms, sigma "
        f"{LAT_SIGMA}), canary x{LAT_SLOWER} (p95 +{LAT_SLOWER - 1:.0%}; A/A horizon "
        f"{h['latency_aa']} canary requests)",
    }
    for part in ("errors", "latency"):
        print(titles[part])
        head = (f"{'test':<16} {'median':>7} {'med.det':>8} {'p90':>7} {'detected':>9} "
                f"{'A/A false alarms':>18} {'/oracle':>8} {'/o.det':>8}")  # fmt: skip
        print(head)
        print("-" * len(head))
        for name, r in fig[part].items():
            fp = f"{r['false_positives']}/{r['aa_runs']} ({r['false_positive_rate']:.1%})"
            print(
                f"{name:<16} {_fmt(r['median']):>7} {_fmt(r['median_detected']):>8} "
                f"{_fmt(r['p90']):>7} {r['detected']:>9.0%} {fp:>18} {r['ratio']:>7.2f}x "
                f"{r['ratio_detected']:>7.2f}x"
            )
        print()
    print(
        "(canary requests to detection: median over all regressed runs (misses count as "
        "never), med.det over the detected ones; /oracle: median / the oracle's median; "
        "/o.det: median / the oracle's med.det; "
        f"seed {fig['seed']}, {fig['seconds']:.0f} s)"
    )


def _fmt(v: float) -> str:
    return f">{HORIZON}" if math.isinf(v) else f"{v:.0f}"


def print_table(figures: dict[str, Any]) -> None:
    sc = figures["scenario"]
    print(
        f"Part (b): canary weight {sc['weight']:.0%}, baseline {sc['baseline_rate']:.1%} errors,"
        f" regressed canary {sc['canary_rate']:.0%}; A/A horizon "
        f"{sc['horizon_canary_requests']} canary requests; seed {sc['seed']}"
    )
    head = f"{'check':<28} {'median':>8} {'p90':>8} {'detected':>9} {'A/A false pos.':>16}"
    print(head)
    print("-" * len(head))
    for row in figures["checks"].values():
        fp = f"{row['false_positives']}/{row['aa_runs']} ({row['false_positive_rate']:.1%})"
        print(
            f"{row['label']:<28} {_fmt(row['median']):>8} {_fmt(row['p90']):>8} "
            f"{row['detected']:>9.0%} {fp:>16}"
        )
    print(
        "(median, p90: canary requests until detection, over "
        f"{next(iter(figures['checks'].values()))['runs']} regressed runs; "
        f"{figures['seconds']:.1f}s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--aa-runs", type=int, default=100)
    ap.add_argument("--oracle-runs", type=int, default=1000, help="regressed runs, each test")
    ap.add_argument("--oracle-aa-runs", type=int, default=1000, help="A/A runs, each test")
    ap.add_argument("--no-oracle", dest="oracle", action="store_false")
    args = ap.parse_args()
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print_table(run_part_b(seed=args.seed, runs=args.runs, aa_runs=args.aa_runs))
    if args.oracle:
        print()
        print_oracle(run_oracle(args.seed, args.oracle_runs, args.oracle_aa_runs))
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
