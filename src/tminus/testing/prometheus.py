"""A real Prometheus server on a free loopback port, scraping given targets every second.

    with AppProcess("stable") as s, AppProcess("canary") as c:
        with PrometheusServer([s.address, c.address]) as prom:   # ready, first scrape done
            prom.url                                              # http://127.0.0.1:PORT
            prom.query('sum(http_requests_total{version="canary"})')  # the API's "data"
            prom.wait_for_scrape()                                # one more scrape of all

Everything (``prometheus.yml``, the TSDB) lives in a temporary directory removed on stop.
The flags used (``--config.file``, ``--storage.tsdb.path``, ``--web.listen-address``,
``--log.level``) exist in Prometheus 2.x and 3.x. The binary is the Debian package
``prometheus`` (``/usr/bin/prometheus``) or any ``prometheus`` on ``$PATH``.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tminus.testing._service import find_binary, stop_process
from tminus.testing.app import free_port

__all__ = ["PrometheusServer", "PrometheusUnavailable", "find_prometheus"]

_CANDIDATES = ("/usr/bin/prometheus", "/usr/local/bin/prometheus")


class PrometheusUnavailable(RuntimeError):
    """Prometheus cannot be started here; the message says why and how to fix it."""


def find_prometheus() -> str:
    return find_binary("prometheus", _CANDIDATES, "prometheus", PrometheusUnavailable, "Prometheus")


class PrometheusServer:
    """One Prometheus scraping ``targets`` (``host:port`` serving ``/metrics``)."""

    def __init__(
        self,
        targets: list[str],
        *,
        scrape_interval: float = 1.0,
        job: str = "app",
        port: int | None = None,
    ) -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.job = job
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        every = f"{int(self.scrape_interval * 1000)}ms"
        targets = ", ".join(json.dumps(t) for t in self.targets)
        return (
            "global:\n"
            f"  scrape_interval: {every}\n"
            f"  evaluation_interval: {every}\n"
            "scrape_configs:\n"
            f"  - job_name: {json.dumps(self.job)}\n"
            f"    scrape_interval: {every}\n"
            f"    scrape_timeout: {every}\n"
            "    static_configs:\n"
            f"      - targets: [{targets}]\n"
        )

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        binary = find_prometheus()
        self._dir = tempfile.TemporaryDirectory(prefix="tminus-prom-")
        root = Path(self._dir.name)
        (root / "prometheus.yml").write_text(self._config())
        log = open(root / "prometheus.log", "wb")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                text = (root / "prometheus.log").read_text(errors="replace")[-1500:]
                self.stop()
                raise PrometheusUnavailable(f"prometheus exited at start: {text}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PrometheusUnavailable(f"prometheus not ready on {self.url} in {timeout}s")
            time.sleep(0.05)
        self.wait_for_scrape(timeout=max(5.0, deadline - time.monotonic()))
        return self

    def query(self, promql: str) -> dict[str, Any]:
        """The ``data`` of ``/api/v1/query`` (raises on an API error)."""
        body = urllib.parse.urlencode({"query": promql}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=body, timeout=5) as resp:
            answer = json.loads(resp.read())
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus query {promql!r} failed: {answer}")
        data: dict[str, Any] = answer["data"]
        return data

    def scrape_times(self) -> dict[str, float]:
        """Target → time of its last successful scrape.

        ``timestamp()`` must get the selector itself: applied to ``up == 1`` it would return
        the evaluation time (an operator's result carries no sample timestamps).
        """
        selector = f'up{{job="{self.job}"}}'
        up = {s["metric"]["instance"]: s["value"][1] for s in self.query(selector)["result"]}
        data = self.query(f"timestamp({selector})")
        return {
            s["metric"]["instance"]: float(s["value"][1])
            for s in data["result"]
            if up.get(s["metric"]["instance"]) == "1"
        }

    def wait_for_scrape(self, timeout: float = 10.0) -> None:
        """Until every target has been scraped successfully after this call started."""
        since = time.time()
        deadline = time.monotonic() + timeout
        while True:
            try:
                seen = self.scrape_times()
            except OSError:
                seen = {}
            if all(seen.get(t, 0.0) >= since for t in self.targets):
                return
            if time.monotonic() > deadline:
                raise PrometheusUnavailable(
                    f"prometheus did not scrape {self.targets} within {timeout}s (saw {seen})"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)
        self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
