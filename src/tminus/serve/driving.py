"""The drive part of the ``tminus serve`` loop: which deploys need a runner now, and the
workers that run them (:mod:`tminus.serve.workers`).

A deploy needs a runner when it is scheduled and due (T-0, a delayed phase), waits at a gate
after an approval or a confirmation was recorded, was paused by a server handover, or is
under way with a dead runner that a server started (taken over by the engine's crash rules).
A claim row per reason makes one server, not two, start it; the deploy's own lock makes one
runner, not two, drive it. The CLI's emergency runs handed to this server
(:func:`tminus.engine.emergency.hand_off`) and the API's runs go through the same start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from datetime import timedelta
from typing import Any

from tminus.clock import now
from tminus.engine.emergency import CLI_KEY
from tminus.serve.workers import Workers
from tminus.states import HANDOVER_REASON, DeployState
from tminus.store.store import Store
from tminus.store.timers import DRIVE

__all__ = ["DRIVE_LEASE", "ENDED_STATES", "LOCKED_RETRY", "Driving"]

#: A drive claim's lease: a server that dies frees the deploy for another after it.
DRIVE_LEASE = timedelta(seconds=15)
#: States after which a deploy has nothing more due (a success still has its watch).
ENDED_STATES = frozenset({"rolled_back", "failed", "aborted"})
#: A run refused because the plan's lock is held is tried again after this.
LOCKED_RETRY = timedelta(seconds=30)
_GATES = (DeployState.AWAITING_APPROVAL, DeployState.AWAITING_CONFIRMATION)
_ACTIVE = (DeployState.PENDING, DeployState.RUNNING, DeployState.ROLLING_BACK)


def log(message: str) -> None:
    """A line of the server's log (stderr), with its time."""
    print(f"{now():%Y-%m-%d %H:%M:%S} {message}", file=sys.stderr, flush=True)


class Driving:
    """The deploys a ``Server`` drives in workers (a part of ``serve.server.Server``)."""

    store: Store
    workers: Workers
    stopping: asyncio.Event
    id: str
    _server_runs: set[str]

    def _needs_runner(self, d: dict[str, Any]) -> tuple[str, list[str]] | None:
        """Why ``d`` needs a runner now, as (claim key, CLI arguments); None if it does not."""
        from tminus.engine.liveness import runner_liveness

        state = DeployState(d["state"])
        at = now()
        if state == DeployState.SCHEDULED and d["due_at"] is not None and d["due_at"] <= at:
            return f"due:{d['due_at'].isoformat()}", ["resume", d["id"]]
        if state in _GATES and d["gate_at"] is not None and d["gate_at"] > d["updated_at"]:
            return f"gate:{d['gate_at'].isoformat()}", ["resume", d["id"]]
        if state == DeployState.PAUSED and d["reason"] == HANDOVER_REASON:
            return f"handover:{d['updated_at'].isoformat()}", ["resume", d["id"]]
        if state in _ACTIVE and not runner_liveness(d).alive and self._driven(d["id"]):
            hb = d["heartbeat_at"] or d["updated_at"]
            return f"takeover:{hb.isoformat()}", ["resume", d["id"]]
        return None

    def _driven(self, deploy_id: str) -> bool:
        """Was the deploy run by a server? Only those are taken over when their runner dies:
        a ``tminus run`` an operator stopped (Ctrl-C) or lost is the operator's to resume."""
        if deploy_id in self._server_runs:
            return True
        if self.store.timers(deploy_id, kinds=(DRIVE,)):
            self._server_runs.add(deploy_id)
            return True
        return False

    async def _drive(self, deploys: list[dict[str, Any]]) -> None:
        if self.stopping.is_set():
            return
        for d in deploys:
            if self.workers.busy(d["id"]):
                continue
            need = self._needs_runner(d)
            if need is None:
                continue
            key, args = need
            await self._start_worker(d["id"], key, args, key.split(":", 1)[0])

    async def _start_worker(
        self, deploy_id: str, key: str, args: list[str], why: str, operator: str = "tminus-serve"
    ) -> Any:
        """Start ``tminus ARGS`` for the deploy in a worker; the Worker, or None when this
        server is stopping, already runs the deploy, or another server claimed ``key``."""
        if self.workers.busy(deploy_id) or self.stopping.is_set():
            return None
        if not self.store.claim_drive(deploy_id, key, self.id, DRIVE_LEASE):
            return None  # another server has it
        if args[0] == "resume":
            args = [*args, "--handover-on-sigterm"]
        w = await self.workers.start(deploy_id, args, operator)
        log(f"{deploy_id}: worker pid {w.proc.pid if w.proc else '?'}: tminus {args[0]} ({why})")
        asyncio.get_running_loop().create_task(self._watch_worker(deploy_id, key, w))
        return w

    async def _take_requests(self) -> None:
        """Runs the CLI handed to this server (``tminus rollback``/``abort`` from its host and
        directory: :func:`tminus.engine.emergency.hand_off`), each in a worker as its person;
        a request that is not one of those is refused (recorded on its row)."""
        from tminus.engine.emergency import valid_request

        for r in self.store.drive_requests(CLI_KEY):
            data = r["data"] or {}
            if data.get("server") != self.id:  # handed to another server (its directory)
                continue
            argv, person = data.get("argv"), str(data.get("person") or "tminus-serve")
            if not isinstance(argv, list) or not valid_request(r["deploy_id"], argv):
                self.store.withdraw_drive(
                    r["deploy_id"], r["key"], "refused: not a run to hand over"
                )
                continue
            await self._start_worker(
                r["deploy_id"], r["key"], argv, f"handed over by {person}", person
            )

    async def run_for(self, deploy_id: str, args: list[str], person: str) -> Any:
        """An API request's run (``tminus resume``, ``rollback``, ``abort``) of a deploy, as
        ``person``, in a worker: the Worker, or None if one already runs this deploy."""
        key = f"api:{now().isoformat()}:{os.urandom(4).hex()}"
        return await self._start_worker(deploy_id, key, args, f"asked by {person}", person)

    async def _watch_worker(self, deploy_id: str, key: str, w: Any) -> None:
        renew = DRIVE_LEASE.total_seconds() / 3
        while not w.done.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(w.done), renew)
            if not w.done.done():
                self.store.renew_drive(deploy_id, key, self.id, DRIVE_LEASE)
        code = w.done.result()
        last = self.workers.last_line(w)
        log(f"{deploy_id}: worker exit {code}: {last}")
        # the plan's lock is held: the server's own runs try again later (a run a person
        # asked for, through the CLI or the API, is not retried behind their back)
        if code == 4 and not key.startswith((CLI_KEY, "api:")):
            self.store.renew_drive(deploy_id, key, self.id, LOCKED_RETRY)
            self.store.event(
                deploy_id,
                "serve.locked",
                f"tminus serve could not start it: {last}; trying again every "
                f"{LOCKED_RETRY.total_seconds():g} s",
            )
            return
        self.store.finish_drive(deploy_id, key, self.id, f"exit {code}: {last}"[:2000])
        if key.startswith("rollback:") and code != 0:
            self.store.event(
                deploy_id,
                "watch.rollback_refused",
                f"the watch's rollback did not happen: {last}",
                data={"exit": code},
            )
        if key.startswith("operation:"):
            self.store.event(
                deploy_id,
                "watch.operation",
                f"the watch's operation ended (exit {code}): {last}",
                data={"exit": code},
            )
        state = self.store.deploy(deploy_id)["state"]
        if state in ENDED_STATES:  # rolled back, failed, aborted: nothing more is due
            n = self._end_timers(deploy_id, f"the deploy is {state}")
            if n:
                log(f"{deploy_id}: {n} timer(s) cancelled: the deploy is {state}")

    def _end_timers(self, deploy_id: str, why: str) -> int:
        """Cancel what is still planned for a deploy that ended; a watch cut short says so."""
        watch = self.store.cancel_timers(deploy_id, why, kinds=("watch",))
        if watch:
            self.store.event(deploy_id, "watch.ended", f"watch ended: {why}")
        return watch + self.store.cancel_timers(deploy_id, why)
