"""Start-up cost of the ``tminus`` command: wall and CPU time of short calls, medians of N.

    uv run python bench/startup.py [--runs 15] [--no-bytecode] [--src DIR]

Calls, each a fresh process of the installed ``tminus`` entry point (the console script next
to this interpreter), run from a scratch directory so no state directory is found:

- ``tminus --help``
- ``tminus check examples/quickstart/plan.yaml`` (a small plan: 4 phases, 11 steps)
- ``tminus run examples/quickstart/plan.yaml --dry-run --confirm ...``

By default ``PYTHONDONTWRITEBYTECODE`` is removed from the children's environment, so the
first (warm-up) call of each command writes whatever bytecode is missing and the timed calls
measure a compiled start, as after ``scripts/bootstrap.sh`` (``uv sync --compile-bytecode``).
``--no-bytecode`` keeps it set, as on a machine that never writes ``.pyc`` files: then every
module without a ``.pyc`` is compiled on every call.

Also printed: the number of modules each call imports (``-X importtime`` lines) and whether
sqlalchemy or tminus.engine/tminus.store were among them. Figures are printed, not asserted
(tests/test_cli_startup.py pins the module count); the exit status is non-zero only if a call
fails.

``--src DIR`` puts DIR first on ``PYTHONPATH``: the figures of another version of the code
with the same installed dependencies, e.g. ``git archive v0.1 | tar -x -C /tmp/old`` then
``--src /tmp/old/src`` for a before/after comparison.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart" / "plan.yaml"
TARGETS_MS = {"--help": 150.0, "check": 300.0}
HEAVY = ("sqlalchemy", "tminus.engine", "tminus.store", "asyncssh", "jinja2", "pydantic")
#: Modules under HEAVY that are not: the engine's light set-up (operator, state dir, resolver).
LIGHT = frozenset({"tminus.engine.prepare"})


def tminus_exe() -> list[str]:
    script = Path(sys.executable).parent / "tminus"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tminus"]


def calls() -> dict[str, list[str]]:
    plan = str(QUICKSTART)
    return {
        "--help": ["--help"],
        "check": ["check", plan],
        "run --dry-run": ["run", plan, "--dry-run", "--confirm", "Release notes reviewed"],
    }


def child_env(bytecode: bool, src: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(src).resolve()), *filter(None, [env.get("PYTHONPATH")])]
        )
    env.setdefault("QUICKSTART_TOKEN", "demo-token-7f3a91")
    env.pop("TMINUS_STATE", None)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def timed(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """Wall and CPU (user + sys of the child) seconds of one call."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def imported(argv: list[str], env: dict[str, str], cwd: str) -> list[str]:
    """The modules one call imports, from ``-X importtime`` (stderr)."""
    exe = [sys.executable, "-X", "importtime", "-m", "tminus", *argv[1:]]
    proc = subprocess.run(exe, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    return [
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line and "cumulative" not in line
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="timed calls per command")
    ap.add_argument(
        "--no-bytecode", action="store_true", help="keep PYTHONDONTWRITEBYTECODE=1 (no .pyc)"
    )
    ap.add_argument("--src", metavar="DIR", help="import tminus from DIR (before/after)")
    args = ap.parse_args()
    env = child_env(bytecode=not args.no_bytecode, src=args.src)
    exe = tminus_exe()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.2f}, bytecode {'off' if args.no_bytecode else 'on'}, "
        f"{args.runs} runs, entry point {exe[0]}" + (f", code from {args.src}" if args.src else "")
    )
    print(
        f"{'call':<15} {'wall ms':>8} {'cpu ms':>8} {'min ms':>8} {'modules':>8}  "
        f"{'target':>7}  heavy imports"
    )
    with tempfile.TemporaryDirectory(prefix="tminus-startup-") as cwd:
        for name, rest in calls().items():
            argv = [*exe, *rest]
            timed(argv, env, cwd)  # warm-up: page cache, and the .pyc files when allowed
            walls, cpus = [], []
            for _ in range(args.runs):
                wall, cpu = timed(argv, env, cwd)
                walls.append(wall)
                cpus.append(cpu)
            mods = imported(argv, env, cwd)
            heavy = sorted(
                {h for h in HEAVY for m in mods if m.startswith(h + ".") and m not in LIGHT}
                | {h for h in HEAVY if h in mods and not h.startswith("tminus.")}
            )
            target = TARGETS_MS.get(name)
            print(
                f"{name:<15} {statistics.median(walls) * 1000:8.0f} "
                f"{statistics.median(cpus) * 1000:8.0f} {min(walls) * 1000:8.0f} "
                f"{len(mods):8d}  {f'≤{target:.0f}' if target else '':>7}  "
                f"{', '.join(heavy) or '-'}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
