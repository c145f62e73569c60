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
canary requests each (about 400,000 requests at 5%). Only canary requests and baseline
ERRORS are simulated one by one: the baseline's successful requests change neither check.

From another script (``bench/`` is not a package)::

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # the bench/ directory
    from canary_sequential import run_part_b
    figures = run_part_b(seed=1, runs=200)   # a dict, see run_part_b; print_table(figures)

Figures are printed, not asserted. Fixed seed; ~10-20 s on one core.
"""

from __future__ import annotations

import argparse
import math
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
    """One stream, both checks watching it; stops when every check has fired or at horizon."""
    test = SequentialTest(ALPHA, weight=WEIGHT)
    run = _Run(windows={w: None for w in WINDOWS})
    assert run.windows is not None
    window_errors = {w: 0 for w in WINDOWS}
    ce = cn = be = 0
    # the next event is a canary request, or else a baseline error
    to_canary = WEIGHT / (WEIGHT + (1 - WEIGHT) * BASELINE_RATE)
    while cn < horizon:
        if rnd.random() < to_canary:
            cn += 1
            error = rnd.random() < p_canary
            for w in WINDOWS:
                n, threshold = w
                window_errors[w] += error
                if cn % n == 0:
                    if run.windows[w] is None and window_errors[w] / n > threshold:
                        run.windows[w] = cn
                    window_errors[w] = 0
            if not error:
                if run.sequential is not None and all(v is not None for v in run.windows.values()):
                    break
                continue
            ce += 1
        else:
            be += 1
        if run.sequential is None:
            bn = max(be, round(cn * (1 - WEIGHT) / WEIGHT))  # only validated, not used
            if test.update(ce, cn, be, bn).canary_worse:
                run.sequential = cn
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
    args = ap.parse_args()
    print_table(run_part_b(seed=args.seed, runs=args.runs, aa_runs=args.aa_runs))


if __name__ == "__main__":
    main()
