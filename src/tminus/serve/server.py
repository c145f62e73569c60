"""The ``tminus serve`` loop: one asyncio process owning time for every deploy of a store.

Every tick (:data:`TICK_S`):

1. **beat**: the server's row in ``servers`` (``tminus approve`` tells the operator a server
   will continue the deploy; ``/healthz`` reports it);
2. **plan**: for each deploy it looks after (not ended, or succeeded in the last
   :data:`WATCH_HORIZON`), when the deploy changed: insert the timers it should have
   (:func:`tminus.serve.planner.plan_timers`; existing keys are left alone);
3. **fire**: claim due timers with a lease, fire each (:func:`tminus.serve.fire.fire`), and
   mark it done in the transaction that records its effect; plan the next of its chain;
4. **drive**: start a worker (:mod:`tminus.serve.workers`) for each deploy that needs its
   runner: scheduled and due (T-0, a delayed phase), waiting at a gate after an approval or
   a confirmation was recorded, paused by a server handover, or under way with a dead runner
   (taken over by the engine's crash rules). A claim row per reason makes one server, not
   two, start it; the deploy's own lock makes one runner, not two, drive it.

SIGTERM (or SIGINT): no new claims; workers get SIGTERM (the step in flight finishes, then
the deploy pauses, handed over); after ``grace`` seconds the rest are killed (the crash
rules apply when they are taken over); leases are released; the server row says stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tminus.clock import now
from tminus.engine import wake
from tminus.plan.model import Plan
from tminus.procfs import pid_token
from tminus.serve.driving import ENDED_STATES, Driving
from tminus.serve.driving import log as _log
from tminus.serve.fire import LATE_S, fire
from tminus.serve.planner import base_time_of, plan_timers
from tminus.serve.workers import Workers
from tminus.store.store import Store

__all__ = ["LEASE", "TICK_S", "WATCH_HORIZON", "Server"]

TICK_S = 0.25
#: A claimed timer's lease, renewed while it fires; a dead server's rows are free after it.
LEASE = timedelta(seconds=20)
#: Succeeded deploys are looked after this long (their watch, notices after success).
WATCH_HORIZON = timedelta(days=60)

#: Timers claimed per transaction.
CLAIM_BATCH = 200
#: The events the planner and the notices read (not the whole log: a long watch has many).
_PLAN_EVENTS = ("deploy.scheduled", "deploy.rescheduled", "watch.stopped")


class Server(Driving):
    def __init__(
        self,
        state_url: str | None,
        *,
        bind: str | None = "127.0.0.1:8470",
        grace: float = 60.0,
        tick: float = TICK_S,
        trusted_header: str | None = None,
        url: str | None = None,
    ) -> None:
        self.store = Store(state_url)
        self.state_url = self.store.url
        self.bind = bind
        #: The request header an authenticating proxy names the person in (None: not trusted).
        self.trusted_header = trusted_header
        #: The dashboard's address as its users reach it (the link in notifications).
        self.url = url.rstrip("/") if url else None
        self.grace = grace
        self.tick = tick
        pid = os.getpid()
        self.id = f"{socket.gethostname()}:{pid}:{pid_token(pid)}"
        from tminus.engine.prepare import state_dir_of

        self.state_dir = state_dir_of(self.store.url)
        self.workers = Workers(self.state_url, self.state_dir / "serve" / "logs")
        self.stopping = asyncio.Event()
        #: Set by SIGUSR1 (a run handed over by the CLI): the loop ticks at once.
        self.woken = asyncio.Event()
        self._plans: dict[str, Plan] = {}
        self._seen: dict[str, Any] = {}
        self._server_runs: set[str] = set()
        self._sending: asyncio.Task[None] | None = None
        self._cwd_checked: set[str] = set()
        self.fired = 0
        self.started_at = now()
        self.last_tick: datetime | None = None
        self.metrics: Any = None
        from tminus.serve.hub import EventHub

        self.hub = EventHub(self.store)

    # --- plans ------------------------------------------------------------------------------
    def plan_of(self, d: dict[str, Any]) -> Plan | None:
        plan = self._plans.get(d["plan_hash"])
        if plan is None:
            from tminus.plan.loader import load_plan_text

            full = self.store.deploy(d["id"])
            result = load_plan_text(full["plan_text"], full["plan_path"])
            if result.plan is None:
                return None
            plan = self._plans[d["plan_hash"]] = result.plan
        return plan

    # --- the loop ---------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        woken = wake.catch(loop, self.woken.set)  # SIGUSR1: a run was handed over, tick now
        http = None
        if self.bind:
            from tminus.serve.http import start_http

            http = await start_http(self)
        self.store.server_beat(self.id, os.getpid(), self.bind, self.url)
        await self.workers.warm_up()
        _log(f"tminus serve {self.id}: store {self.store.safe_url}, http {self.bind or 'off'}")
        last_beat = now()
        try:
            while not self.stopping.is_set():
                if abs((now() - last_beat).total_seconds()) >= 1.0:  # each second, or a jump
                    self.store.server_beat(self.id, os.getpid(), self.bind, self.url)
                    last_beat = now()
                await self.tick_once()
                await self._wait_tick()
        finally:
            if woken:
                wake.release(loop)
            self.hub.close()  # open event streams end, so the HTTP server can stop
            await self._shutdown()
            if http is not None:
                await http.stop()
        return 0

    async def _wait_tick(self) -> None:
        """Until the next tick, or sooner: the server stops, or is woken (SIGUSR1)."""
        waits = {
            asyncio.ensure_future(self.stopping.wait()),
            asyncio.ensure_future(self.woken.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=self.tick, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        self.woken.clear()

    async def tick_once(self) -> None:
        """One pass: runs handed over by the CLI, plan, fire, drive, and deliver notifications
        (in the background). Errors are logged, never fatal to the server."""
        self.last_tick = now()
        try:
            await self._take_requests()
            deploys = self.store.serve_deploys(now() - WATCH_HORIZON)
            self._plan(deploys)
            await self._fire()
            await self._drive(deploys)
            if self._sending is None or self._sending.done():
                self._sending = asyncio.get_running_loop().create_task(self._deliver())
        except Exception as exc:  # a store hiccup or a bad row: log, go on next tick
            _log(f"tick failed: {type(exc).__name__}: {exc}")

    async def _deliver(self) -> None:
        """Send the outbox's due messages of every deploy (slow receivers never hold a
        tick: this runs beside the loop, one pass at a time)."""
        from tminus.engine.delivery import deliver_due

        cache: dict[str, tuple[Plan, Any] | None] = {}

        def context(deploy_id: str) -> tuple[Plan, Any] | None:
            if deploy_id not in cache:
                cache[deploy_id] = self._context(deploy_id)
            return cache[deploy_id]

        try:
            for s in await deliver_due(self.store, self.id, context, limit=50):
                _log(f"notify {s.channel}: {s.state}: {s.title}: {s.detail}")
        except Exception as exc:
            _log(f"notifications not delivered now: {type(exc).__name__}: {exc}")

    def _context(self, deploy_id: str) -> tuple[Plan, Any] | None:
        """A deploy's plan and resolver (for its channels' ``${…}`` and masking)."""
        from tminus.engine.prepare import make_resolver
        from tminus.engine.program import split_overrides

        d = self.store.deploy(deploy_id)
        plan = self.plan_of(d)
        if plan is None:
            return None
        overrides, _ = split_overrides(d["overrides"])
        resolver = make_resolver(
            plan, d["plan_path"], deploy_id, "tminus-serve", overrides, self.state_dir
        )
        return plan, resolver

    def _plan(self, deploys: list[dict[str, Any]]) -> None:
        for d in deploys:
            mark = (d["state"], d["updated_at"], d["due_at"])
            if self._seen.get(d["id"]) == mark:
                continue
            plan = self.plan_of(d)
            if plan is None:
                continue
            events = self.store.events(d["id"], types=_PLAN_EVENTS)
            self._check_cwd(d["id"], events)
            specs = plan_timers(plan, d, self.store.phase_rows(d["id"]), events)
            if any(e["type"] == "watch.stopped" for e in events):
                specs = [s for s in specs if s["kind"] != "watch"]
            self.store.add_timers(d["id"], specs)
            self._seen[d["id"]] = mark

    def _check_cwd(self, deploy_id: str, events: list[dict[str, Any]]) -> None:
        """Relative paths of a plan resolve against the directory tminus runs in: a deploy
        scheduled from another directory than the server's is told so, once."""
        if deploy_id in self._cwd_checked:
            return
        self._cwd_checked.add(deploy_id)
        where = next(
            (str((e["data"] or {}).get("cwd")) for e in events if e["type"] == "deploy.scheduled"),
            None,
        )
        if where and where != "None" and Path(where) != Path.cwd():
            msg = (
                f"scheduled from {where}, but tminus serve runs in {Path.cwd()}: relative "
                "paths of the plan resolve against the server's directory"
            )
            self.store.event(deploy_id, "serve.cwd_differs", msg)
            _log(f"{deploy_id}: {msg}")

    async def _fire(self) -> None:
        """Claim due timers, in batches, until none is due (or the server stops); the deploy
        row, its phases and its scheduling events are read once per deploy and batch."""
        while not self.stopping.is_set():
            claimed = self.store.claim_timers(self.id, LEASE, limit=CLAIM_BATCH)
            if not claimed:
                return
            context: dict[str, tuple[dict[str, Any], Any, list[dict[str, Any]]]] = {}
            for timer in claimed:
                if self.stopping.is_set():
                    self.store.release_leases(self.id)
                    return
                did = timer["deploy_id"]
                if did not in context:
                    context[did] = (
                        self.store.deploy(did),
                        self.store.phase_rows(did),
                        self.store.events(did, types=_PLAN_EVENTS),
                    )
                d, rows, events = context[did]
                if await self._fire_one(timer, d, rows, events):
                    context.pop(did)  # it ran something: read the deploy again
            if len(claimed) < CLAIM_BATCH:
                return

    async def _fire_one(
        self,
        timer: dict[str, Any],
        d: dict[str, Any],
        phase_rows: dict[int, dict[str, Any]],
        events: list[dict[str, Any]],
    ) -> bool:
        """Fire one claimed timer; True when it changed the deploy (a run started)."""
        at = now()
        plan = self.plan_of(d)
        if plan is None:
            self.store.finish_timer(timer["id"], self.id, "skipped", "the plan no longer loads")
            return False
        if d["state"] in ENDED_STATES:
            why = f"the deploy is {d['state']}"
            self.store.finish_timer(timer["id"], self.id, "skipped", why)
            n = self._end_timers(d["id"], why)
            _log(f"{d['id']}: {timer['key']}: skipped, {n} more cancelled: {why}")
            return False
        renew = asyncio.get_running_loop().create_task(self._renew(timer["id"]))
        try:
            firing = await fire(
                plan,
                d,
                timer,
                at=at,
                base=base_time_of(plan, phase_rows),
                events=events,
                state_dir=self.state_dir,
                link=f"{self.url}/deploys/{d['id']}" if self.url else None,
                phase_rows=phase_rows,
            )
        except Exception as exc:
            firing = None
            _log(f"timer {timer['key']} of {d['id']} failed: {type(exc).__name__}: {exc}")
        finally:
            renew.cancel()
        if firing is None:
            return False  # the lease expires; it is tried again (attempts counts)
        records = list(firing.events)
        if firing.outbox and firing.notice is not None:
            text, data = firing.notice
            records.append(("notify", text, data))
        # The messages and their `notify` event are recorded with the timer's `done`, in one
        # transaction, under the lease: once.
        if not self.store.finish_timer(
            timer["id"], self.id, firing.state, firing.outcome, records, outbox=firing.outbox
        ):
            _log(f"timer {timer['key']} of {d['id']}: lease lost, its effect left to its holder")
            return False
        self.fired += 1
        late = (at - timer["due_at"]).total_seconds()
        if self.metrics is not None:
            self.metrics.timer_fired(timer["kind"], late, firing.events)
        _log(f"{d['id']}: {timer['key']}: {firing.state}: {firing.outcome}")
        if firing.follow:
            self.store.add_timers(d["id"], firing.follow)
        if firing.drive is not None:
            key, args = firing.drive
            await self._start_worker(d["id"], key, args, f"{timer['key']} ({late:.0f} s late)")
            return True
        return False

    async def _renew(self, timer_id: int) -> None:
        while True:
            await asyncio.sleep(LEASE.total_seconds() / 4)
            self.store.renew_leases(self.id, [timer_id], LEASE)

    # --- shutdown ---------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        """Workers first (they pause before their next step), then the rest."""
        if self.workers.running:
            _log(f"stopping: {len(self.workers.running)} worker(s) finish their step and pause")
            self.workers.signal_all(signal.SIGTERM)
        await self.workers.close_warm()
        if self._sending is not None and not self._sending.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._sending, 15)
        self.store.release_outbox(self.id)
        if self.workers.running and not await self.workers.wait_all(self.grace):
            _log(f"stopping: grace of {self.grace:g} s over, killing what is left")
            self.workers.signal_all(signal.SIGKILL)
            await self.workers.wait_all(10)
        self.store.release_leases(self.id)
        self.store.server_stopped(self.id)
        _log("tminus serve stopped")

    def health(self) -> dict[str, Any]:
        figures = self.store.timer_figures(timedelta(seconds=LATE_S))
        return {
            "status": "stopping" if self.stopping.is_set() else "ok",
            "server": self.id,
            "store": self.store.safe_url,
            "started_at": self.started_at.isoformat(),
            "last_tick": self.last_tick.isoformat() if self.last_tick else None,
            "workers": sorted(self.workers.running),
            "timers": figures,
            "fired": self.fired,
        }


def serve(
    state_url: str | None,
    bind: str | None,
    grace: float,
    *,
    trusted_header: str | None = None,
    url: str | None = None,
) -> int:
    """``tminus serve``: run until SIGTERM or SIGINT."""
    server = Server(state_url, bind=bind, grace=grace, trusted_header=trusted_header, url=url)
    try:
        return asyncio.run(server.run())
    finally:
        server.store.close()
