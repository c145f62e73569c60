"""What hostile plan files cost ``tminus check``: CPU seconds and peak memory per input.

    uv run python bench/plan_limits.py [--repeat 3] [--limit-mb 1024]

Each input is checked by a fresh ``python -m tminus check FILE`` child process under an
address-space limit (RLIMIT_AS, 1 GiB by default, so an unbounded read cannot take the
machine down) and a 300 s wall timeout. Per input the table shows the exit status and the
first line of stderr of the last run, and the **median** over the repeats of the child's CPU
time (user + system, from ``wait4``) and its peak RSS. Interpreter start-up and imports are
included: the ``baseline`` row (a small valid plan) shows what that costs.

Inputs:

- ``baseline``: a valid 1-phase plan.
- ``/dev/zero``: an endless file (NUL bytes).
- ``big-10mb``: a 10 MB plan (one huge ``variables:`` mapping).
- ``nested-20k``: 20,000 nested flow lists (``[[[[…]]]]``).
- ``nested-20k-block``: 20,000 nested block lists (``- - - …`` on separate lines).
- ``laughs``: a billion-laughs alias bomb (9 levels of 10 aliases).
- ``merge-scalar``: ``<<: 5``, a merge key with a scalar value.
- ``valid-4.9mb``: a valid plan just under the 5 MiB limit (50,000 steps in flow style): what
  the largest accepted plan costs.

Two CPU columns: ``check cpu s`` is the whole ``tminus check`` child (interpreter start-up
and imports included: compare with ``baseline``); ``load cpu s`` is ``load_plan`` alone,
timed with ``time.process_time`` inside a child under the same limit.

Figures are printed, not asserted; the exit status is 0 unless the bench itself fails.
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

BASE = "name: b\nenvironment: t\nphases:\n  - name: p\n    steps:\n"
STEP = "      - {kind: run, name: s, command: 'true'}\n"


def inputs(tmp: Path) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def write(name: str, text: str) -> None:
        p = tmp / f"{name}.yaml"
        p.write_text(text)
        out.append((name, str(p)))

    write("baseline", BASE + STEP)
    out.append(("/dev/zero", "/dev/zero"))
    lines = [f"  v{i}: '{'x' * 80}'\n" for i in range(110_000)]
    write("big-10mb", "variables:\n" + "".join(lines) + BASE + STEP)
    write("nested-20k", BASE + STEP + "x: " + "[" * 20_000 + "]" * 20_000 + "\n")
    write("nested-20k-block", BASE + STEP + "x:\n  " + "- " * 20_000 + "1\n")
    laughs = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        laughs.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    write("laughs", "variables:\n" + "".join(f"  {x}\n" for x in laughs) + BASE + STEP)
    write("merge-scalar", BASE + STEP + "variables:\n  <<: 5\n")
    steps = "".join(
        f"      - {{kind: run, name: s{i}, command: 'echo {i} {'y' * 40}'}}\n"
        for i in range(50_000)
    )
    write("valid-4.9mb", BASE + steps)
    return out


LOAD = (
    "import sys, time\n"
    "from tminus.plan.loader import load_plan\n"
    "t = time.process_time()\n"
    "r = load_plan(sys.argv[1])\n"
    "print(time.process_time() - t)\n"
)


def load_cpu(path: str, limit_mb: int) -> float:
    """CPU seconds of ``load_plan(path)`` alone, in a child under the address-space limit."""

    def limit() -> None:
        size = limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    out = subprocess.run(
        [sys.executable, "-c", LOAD, path],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=120,
        check=False,
    )
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def run_once(path: str, limit_mb: int) -> tuple[int, float, float, str]:
    """Exit status, CPU seconds, peak RSS in MB and the first stderr line of one check."""

    def limit() -> None:
        size = limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    proc = subprocess.Popen(
        [sys.executable, "-m", "tminus", "check", path],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=limit,
    )
    deadline = time.monotonic() + 300
    assert proc.stderr is not None
    err = b""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.01)
    err = proc.stderr.read()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    first = next((ln for ln in err.decode(errors="replace").splitlines() if ln.strip()), "")
    cpu = usage.ru_utime + usage.ru_stime
    return proc.returncode, cpu, usage.ru_maxrss / 1024, first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--limit-mb", type=int, default=1024, help="RLIMIT_AS of each check")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores")
    print(
        f"{'input':<18} {'size':>10} {'exit':>4} {'check cpu s':>11} {'load cpu s':>10} "
        f"{'rss MB':>7}  first stderr line"
    )
    with tempfile.TemporaryDirectory() as d:
        for name, path in inputs(Path(d)):
            runs = [run_once(path, args.limit_mb) for _ in range(args.repeat)]
            code, _, _, first = runs[-1]
            cpu = statistics.median(r[1] for r in runs)
            rss = statistics.median(r[2] for r in runs)
            load = statistics.median(load_cpu(path, args.limit_mb) for _ in range(args.repeat))
            size = "endless" if path == "/dev/zero" else f"{os.path.getsize(path):,}"
            print(
                f"{name:<18} {size:>10} {code:>4} {cpu:>11.2f} {load:>10.3f} {rss:>7.0f}  "
                f"{first[:70]}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
