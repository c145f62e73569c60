"""The scaling curve of bench/fleet.py: hosts → seconds per variant from several ``--json``
reports, a least-squares line ``seconds = a + b·hosts`` per variant, and what it predicts at
the sizes asked for (e.g. the 1,000 hosts a machine could not run, or to compare with them).

    uv run --group bench python bench/fleet.py --hosts 100 --json > f100.json   # and 250, 500…
    uv run python bench/fleet/scaling.py f100.json f250.json f500.json [--at 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``y = a + b·x``; one point gives a line through the origin."""
    if len(points) == 1:
        x, y = points[0]
        return 0.0, y / x
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="bench/fleet.py --json outputs")
    ap.add_argument("--at", default="1000", help="comma-separated host counts to predict")
    args = ap.parse_args()
    by_variant: dict[str, dict[int, float]] = {}
    for path in args.reports:
        report = json.loads(path.read_text())
        for variant, secs in report["medians_s"].items():
            by_variant.setdefault(variant, {})[int(report["hosts"])] = float(secs)
    sizes = sorted({h for per in by_variant.values() for h in per})
    print("| hosts | " + " | ".join(by_variant) + " |")
    print("|---:|" + "---:|" * len(by_variant))
    for h in sizes:
        cells = [f"{per[h]:.1f}" if h in per else "–" for per in by_variant.values()]
        print(f"| {h} | " + " | ".join(cells) + " |")
    at = [int(x) for x in args.at.split(",") if x.strip()]
    print()
    lines: dict[str, tuple[float, float]] = {}
    for variant, per in by_variant.items():
        a, b = lines[variant] = fit(sorted((float(h), s) for h, s in per.items()))
        pred = ", ".join(f"{h} hosts ≈ {a + b * h:.0f} s" for h in at)
        print(f"{variant}: seconds ≈ {a:.2f} + {b * 1000:.1f} ms × hosts; {pred}")
    if "tminus" in lines:
        for other in (v for v in lines if v != "tminus"):
            ratios = []
            for h in at:
                t = lines["tminus"][0] + lines["tminus"][1] * h
                o = lines[other][0] + lines[other][1] * h
                ratios.append(f"{h}: {o / t:.2f}" if other == "ansible" else f"{h}: {t / o:.2f}")
            what = "ansible/tminus" if other == "ansible" else f"tminus/{other}"
            print(f"{what} on the fitted lines: " + ", ".join(ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
