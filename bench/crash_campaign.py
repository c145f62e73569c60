"""The whole crash campaign: every crash point of every variant (or --per-kind N of each),
against the machine's PostgreSQL. Prints the outcome table; exit 1 if any point had a problem.

    uv run python bench/crash_campaign.py                 # every point (about 10 minutes)
    uv run python bench/crash_campaign.py --per-kind 10   # a spread sample
    uv run python bench/crash_campaign.py --store postgres   # tminus's state on PostgreSQL

See tminus/testing/crash_campaign.py for the plan, the crash points and the judge.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from tminus.testing.crash_campaign import KINDS, STORES, VARIANTS, Campaign, format_table, sample

PG_ADMIN = os.environ.get("TMINUS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-kind", type=int, default=0, help="points per variant and kind (0: all)")
    ap.add_argument("--variant", action="append", choices=VARIANTS)
    ap.add_argument("--kind", action="append", choices=KINDS, help="crash point kinds to run")
    ap.add_argument(
        "--store", choices=STORES, default="sqlite", help="where tminus keeps its state"
    )
    args = ap.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="tminus-campaign-") as tmp:
        campaign = Campaign(Path(tmp), PG_ADMIN, store=args.store)
        print(f"state store: {args.store}", flush=True)
        counts = {v: campaign.count(v) for v in (args.variant or VARIANTS)}
        if args.kind:
            counts = {v: {k: n for k, n in c.items() if k in args.kind} for v, c in counts.items()}
        print("points per run:", counts, flush=True)
        per_kind = args.per_kind or max(n for c in counts.values() for n in c.values())
        points = sample(counts, per_kind)
        outcomes = []
        t0 = time.monotonic()
        for i, p in enumerate(points, 1):
            o = campaign.run_point(p)
            outcomes.append(o)
            flag = "ok" if o.ok else "PROBLEM: " + "; ".join(o.problems)
            print(f"[{i}/{len(points)}] {p} {o.final} {o.seconds:.1f}s {flag}", flush=True)
        print()
        print(format_table(outcomes))
        print(f"{len(outcomes)} points in {time.monotonic() - t0:.0f} s")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
