"""A tiny real exporter for the proofile (seed 003) canary rehearsal: the node, cAdvisor and
Web Vitals series the plan's queries read, measured from the rehearsal's own processes.

    python tests/examples/proofile_exporter.py --port P \\
        --process web-stable-1=PID --process web-canary-1=PID --page http://nginx/

It is a stand-in, and says so here: the rehearsal machine is shared, so a real node exporter
or cAdvisor would measure everyone's CPU and memory. Instead each app process is treated as
one node with one CPU and a memory budget, and as one container:

- ``node_cpu_seconds_total{node,cpu="0",mode}``: ``user`` and ``system`` are the process's
  CPU seconds (``/proc/PID/stat``), ``idle`` is the wall time since this exporter started
  minus the CPU seconds used since then. So the plan's ``1 - avg(rate(...{mode="idle"}))``
  is the app processes' average CPU share.
- ``node_memory_MemTotal_bytes{node}`` is ``--memory-budget`` (default 512 MiB) and
  ``node_memory_MemAvailable_bytes{node}`` the budget minus the process's resident set
  (``/proc/PID/statm``).
- ``container_memory_working_set_bytes{name="proofile-backend-<node>"}``: the resident set.
- ``web_vitals_lcp_seconds`` (histogram): no browser renders anything here. A client in this
  process loads ``--page`` (the site through nginx) every 0.25 s and records how long the
  whole response took; a failed load (no answer, 5xx) is not recorded. It stands in for the
  Largest Contentful Paint the frontend would report. Its first bucket is 0.1 s, so while
  every load is faster the plan's p75 reads 0.075 s (histogram_quantile's interpolation).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LCP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 4.0, 6.0)
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid``."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # utime, stime (fields 14, 15)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class Exporter:
    def __init__(self, processes: dict[str, int], budget: int, page: str | None) -> None:
        self.processes = processes
        self.budget = budget
        self.page = page
        self.started = time.monotonic()
        self.cpu0 = {node: sum(cpu_seconds(pid)) for node, pid in processes.items()}
        self.idle = dict.fromkeys(processes, 0.0)
        self.lock = threading.Lock()
        self.lcp = [0] * len(LCP_BUCKETS)
        self.lcp_count = 0
        self.lcp_sum = 0.0

    def load_page(self, stop: threading.Event) -> None:
        assert self.page is not None
        while not stop.wait(0.25):
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(self.page, timeout=10) as resp:
                    resp.read()
            except (OSError, urllib.error.URLError):
                continue  # a failed load paints nothing
            took = time.perf_counter() - start
            with self.lock:
                self.lcp_count += 1
                self.lcp_sum += took
                for i, le in enumerate(LCP_BUCKETS):
                    if took <= le:
                        self.lcp[i] += 1

    def metrics(self) -> str:
        wall = time.monotonic() - self.started
        out = ["# TYPE node_cpu_seconds_total counter"]
        mem: list[str] = []
        for node, pid in self.processes.items():
            user, system = cpu_seconds(pid)
            # a counter: never below its previous value
            idle = max(self.idle[node], wall - (user + system - self.cpu0[node]))
            self.idle[node] = idle
            for mode, value in (("idle", idle), ("user", user), ("system", system)):
                out.append(f'node_cpu_seconds_total{{node="{node}",cpu="0",mode="{mode}"}} {value}')
            rss = rss_bytes(pid)
            mem.append(f'node_memory_MemTotal_bytes{{node="{node}"}} {self.budget}')
            mem.append(f'node_memory_MemAvailable_bytes{{node="{node}"}} {self.budget - rss}')
            short = node.removeprefix("web-")
            mem.append(
                f'container_memory_working_set_bytes{{name="proofile-backend-{short}"}} {rss}'
            )
        out += mem
        if self.page is not None:
            out.append("# TYPE web_vitals_lcp_seconds histogram")
            with self.lock:
                for le, n in zip(LCP_BUCKETS, self.lcp, strict=True):
                    out.append(f'web_vitals_lcp_seconds_bucket{{le="{le}"}} {n}')
                out.append(f'web_vitals_lcp_seconds_bucket{{le="+Inf"}} {self.lcp_count}')
                out.append(f"web_vitals_lcp_seconds_sum {self.lcp_sum:.6f}")
                out.append(f"web_vitals_lcp_seconds_count {self.lcp_count}")
        return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--process", action="append", default=[], help="NODE=PID")
    ap.add_argument("--memory-budget", type=int, default=512 * 1024 * 1024)
    ap.add_argument("--page", default=None)
    args = ap.parse_args()
    processes = {k: int(v) for k, _, v in (p.partition("=") for p in args.process)}
    exporter = Exporter(processes, args.memory_budget, args.page)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = exporter.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    stop = threading.Event()
    if args.page:
        threading.Thread(target=exporter.load_page, args=(stop,), daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    try:
        server.serve_forever()
    finally:
        stop.set()


if __name__ == "__main__":
    main()
