"""How fast `tminus serve` continues a deploy after its approval (issue #15 item 1: "within 1 s").

    uv run python bench/serve_gate.py [--runs 7]

In a temp directory (SQLite store): a real `tminus serve`, then, per run, `tminus run` of a
one-step plan that waits for one approval (exit 3), `tminus approve`, and the time until the
server has resumed the deploy. Printed per run and as medians:

- approval recorded -> deploy.resumed: the store's own timestamps (the approval row's and the
  resume event's), so the figure holds whatever the polling of this script;
- approve returned -> running, and -> succeeded: wall time seen by this script (polling the
  store every 10 ms).

The server ticks every 0.25 s; the rest is starting the worker (`tminus resume`, a new Python
process that imports the engine).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAN = """\
tminus: 1
name: gate
environment: bench
roles:
  lead:
    people: [lena]
approvals:
  required: [lead]
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: run
        name: mark
        command: "true"
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--port", type=int, default=18479)
    args = ap.parse_args()
    from tminus.store.store import Store

    work = Path(tempfile.mkdtemp(prefix="tminus-bench-gate-"))
    env = {**os.environ, "TMINUS_OPERATOR": "op"}
    env.pop("TMINUS_STATE", None)
    (work / "plan.yaml").write_text(PLAN)
    py = sys.executable
    log = open(work / "serve.log", "ab")  # noqa: SIM115 - closed at the end
    server = subprocess.Popen(
        [py, "-m", "tminus", "serve", "--bind", f"127.0.0.1:{args.port}"],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    rows: list[tuple[float, float, float]] = []
    try:
        time.sleep(3)
        store = Store(f"sqlite:///{work}/.tminus/state.db")
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        for i in range(args.runs):
            subprocess.run(
                [py, "-m", "tminus", "run", "plan.yaml"],
                cwd=work,
                env=env,
                capture_output=True,
                timeout=120,
            )
            latest = store.latest_deploy()
            assert latest is not None
            d = str(latest["id"])
            assert store.deploy(d)["state"] == "awaiting_approval", store.deploy(d)["state"]
            subprocess.run(
                [py, "-m", "tminus", "approve", d, "--role", "lead", "--as", "lena"],
                cwd=work,
                env=env,
                capture_output=True,
                timeout=60,
            )
            t1 = time.monotonic()
            deadline = t1 + 60
            while store.deploy(d)["state"] == "awaiting_approval" and time.monotonic() < deadline:
                time.sleep(0.01)
            t2 = time.monotonic()
            while store.deploy(d)["state"] not in ("succeeded", "failed", "paused"):
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {i + 1}: the deploy did not finish in 60 s")
                time.sleep(0.01)
            t3 = time.monotonic()
            approved = store.approvals(d)[0]["ts"]
            resumed = next(e["ts"] for e in store.events(d) if e["type"] == "deploy.resumed")
            row = ((resumed - approved).total_seconds(), t2 - t1, t3 - t1)
            rows.append(row)
            print(
                f"run {i + 1}: approval -> deploy.resumed {row[0]:.2f} s, approve returned ->"
                f" running {row[1]:.2f} s, -> succeeded {row[2]:.2f} s"
            )
        store.close()
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'':<38} {'median':>7} {'max':>6}")
    for k, name in enumerate(
        [
            "approval recorded -> deploy.resumed",
            "approve returned -> running",
            "approve returned -> succeeded",
        ]
    ):
        vals = [r[k] for r in rows]
        print(f"{name:<38} {statistics.median(vals):6.2f}s {max(vals):5.2f}s")


if __name__ == "__main__":
    main()
