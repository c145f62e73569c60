"""The HTTP side of ``tminus serve``: ``/healthz`` and ``/metrics`` (the dashboard and API
arrive on the same app). FastAPI on uvicorn, in the server's own event loop.

``/metrics`` (Prometheus text format, prometheus_client), read from the store at each scrape
so that every server of a store reports the same figures and none are lost at a restart:

- ``tminus_deploys{state}``: deploys by stored state;
- ``tminus_step_duration_seconds{kind}``: a histogram of finished steps' durations;
- ``tminus_rollbacks_total``: rollbacks started (``rollback.plan`` events);
- ``tminus_timers{state="pending"|"late"}``: timers waiting, and those past due by more than
  5 s;
- ``tminus_watch_measurements_total{status}``: watch measurements by outcome;
- ``tminus_timers_fired_total{kind}`` and ``tminus_timer_lateness_seconds``: this server's
  firings and how late they were (process counters, reset at a restart as counters are).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tminus.serve.server import Server

__all__ = ["HttpServer", "ServeMetrics", "make_app", "start_http"]

_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600)


class ServeMetrics:
    """The Prometheus registry of one server."""

    def __init__(self, server: Server) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.server = server
        self.registry = CollectorRegistry()
        self.registry.register(_StoreCollector(server))
        self.fired = Counter(
            "tminus_timers_fired", "Timers fired by this server", ["kind"], registry=self.registry
        )
        self.lateness = Histogram(
            "tminus_timer_lateness_seconds",
            "How late after its due time this server fired a timer",
            buckets=(0.25, 0.5, 1, 2, 5, 30, 300, 3600),
            registry=self.registry,
        )

    def timer_fired(self, kind: str, late_s: float, events: list[Any]) -> None:
        self.fired.labels(kind).inc()
        self.lateness.observe(max(0.0, late_s))

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))


class _StoreCollector:
    def __init__(self, server: Server) -> None:
        self.server = server

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        store = self.server.store
        deploys = GaugeMetricFamily("tminus_deploys", "Deploys by stored state", labels=["state"])
        for state, n in sorted(store.deploy_counts().items()):
            deploys.add_metric([state], n)
        yield deploys
        by_kind: dict[str, list[float]] = {}
        for kind, secs in store.step_durations():
            by_kind.setdefault(kind, []).append(secs)
        hist = HistogramMetricFamily(
            "tminus_step_duration_seconds", "Durations of finished steps", labels=["kind"]
        )
        for kind, values in sorted(by_kind.items()):
            buckets = [(str(b), float(sum(1 for v in values if v <= b))) for b in _BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            hist.add_metric([kind], buckets, sum_value=sum(values))
        yield hist
        yield CounterMetricFamily(
            "tminus_rollbacks", "Rollbacks started", value=store.event_count("rollback.plan")
        )
        from tminus.serve.fire import LATE_S

        figures = store.timer_figures(timedelta(seconds=LATE_S))
        timers = GaugeMetricFamily("tminus_timers", "Timers waiting to fire", labels=["state"])
        timers.add_metric(["pending"], figures["pending"])
        timers.add_metric(["late"], figures["late"])
        yield timers
        watch = CounterMetricFamily(
            "tminus_watch_measurements", "Watch measurements by status", labels=["status"]
        )
        for status, n in sorted(store.watch_outcomes().items()):
            watch.add_metric([status], n)
        yield watch


def make_app(server: Server) -> Any:
    from fastapi import Depends, FastAPI
    from fastapi.responses import JSONResponse, Response

    # No /docs nor /redoc: FastAPI loads their scripts from a CDN (nothing here does). The
    # OpenAPI document is served below, to a caller: nothing but /status and /healthz is
    # anonymous.
    app = FastAPI(
        title="tminus serve", version="1", docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.server = server
    metrics = server.metrics
    from tminus.serve import api, auth, dashboard, login, status_page

    auth.configure(app, server.store, trusted_header=server.trusted_header)
    app.include_router(login.router)
    app.include_router(api.router)
    app.include_router(dashboard.router)
    app.include_router(status_page.router)  # public: no caller required

    # Handlers are coroutines: they run on the server's loop thread, the only thread that
    # uses its store (a plain ``def`` would run in a thread pool, sharing the connection).
    @app.get("/healthz", response_model=None)
    async def healthz() -> JSONResponse:
        body = server.health()
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/metrics", response_model=None, include_in_schema=False)
    async def prometheus(who: auth.Caller = Depends(auth.caller)) -> Response:
        """Any authenticated person (Prometheus: ``authorization: credentials: TOKEN`` in its
        scrape config)."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json", response_model=None, include_in_schema=False)
    async def openapi(who: auth.Caller = Depends(auth.caller)) -> JSONResponse:
        return JSONResponse(app.openapi())

    return app


class HttpServer:
    def __init__(self, uv: Any, task: asyncio.Task[None]) -> None:
        self.uv = uv
        self.task = task

    async def stop(self) -> None:
        self.uv.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 10)


async def start_http(server: Server) -> HttpServer:
    """Serve the app on ``server.bind`` (HOST:PORT) in the running loop; the server's own
    signal handlers stay in place (uvicorn's are not installed)."""
    import signal

    import uvicorn

    # A client that leaves before its answer (a closed tab, a probe's timeout) makes a write
    # fail: that must be an error of that connection, not SIGPIPE, whose default action (the
    # CLI restores it, for `tminus log | head`) would kill the server. Workers get the default
    # back (subprocess restores signals in the child).
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    server.metrics = ServeMetrics(server)
    host, _, port = (server.bind or "").rpartition(":")
    config = uvicorn.Config(
        make_app(server), host=host or "127.0.0.1", port=int(port), log_level="warning"
    )

    class _Uvicorn(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    # The socket is bound here, so that a port in use is an OSError of ours (uvicorn would
    # exit the process from inside its task).
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it a keep-alive request waited ~40 ms (Nagle, the client's delayed ACK).
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {server.bind}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    uv = _Uvicorn(config)
    task = asyncio.get_running_loop().create_task(uv.serve(sockets=[sock]))
    while not uv.started:
        if task.done():
            task.result()  # raises why it could not start (the port is taken…)
            raise OSError(f"the HTTP server on {server.bind} stopped at start")
        await asyncio.sleep(0.02)
    return HttpServer(uv, task)
