"""A dead runner's leftovers: the lock taken over from it (said on the console, in both
deploys' logs) and the process groups it started killed (reaped here, or over SSH on their
host) before anything runs again; the holder check the store's lock functions call."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

from tminus import work
from tminus.engine.launch import RunOptions, _load_deploy, _say, _state_dir
from tminus.engine.liveness import Liveness, describe_holder, runner_liveness
from tminus.engine.prepare import make_resolver
from tminus.engine.program import split_overrides
from tminus.plan.model import Plan
from tminus.steps.base import DeployFleet
from tminus.store.store import Store

if TYPE_CHECKING:
    from tminus.steps.base import Fleet


def _holder_check(d: dict[str, Any]) -> str | None:
    """For the store's lock functions: None when the holder's runner is dead, else who it is
    (deploy, person, host, pid, heartbeat age)."""
    live = runner_liveness(d)
    return describe_holder(d, live) if live.alive else None


def _relock(store: Store, plan: Plan, d: dict[str, Any], opts: RunOptions) -> None:
    """Re-take the plan's lock for deploy ``d`` (resume, retry); a takeover is said and the
    old holder's orphans are killed."""
    taken = store.acquire_lock(
        plan.name,
        plan.environment,
        d["id"],
        opts.operator,
        d["reason"],
        force=opts.force_unlock,
        holder_check=_holder_check,
    )
    if taken is not None:
        _took_over(store, taken, d["id"], opts.operator)


def _took_over(store: Store, taken: dict[str, Any], deploy_id: str, operator: str) -> None:
    """A lock was taken over (recorded in both deploys' logs by the store): say so on the
    console, then kill what the old holder's dead runner left running."""
    old = store.deploy(taken["deploy_id"])
    live = runner_liveness(old)
    why = live.why if live.has_runner else f"it is {old['state']}"
    _say(
        f"took over the lock of deploy {taken['deploy_id']} (held by {taken['holder']} on "
        f"{taken['host']}, pid {taken['pid']}, since "
        f"{taken['acquired_at']:%Y-%m-%d %H:%M:%S %Z}): its runner is not alive: {why}"
    )
    _kill_orphans(store, old, live, operator, also=(deploy_id,))


def _kill_orphans(
    store: Store,
    d: dict[str, Any],
    live: Liveness,
    operator: str,
    also: tuple[str, ...] = (),
) -> list[str]:
    """The runner of deploy ``d`` is dead: kill what is left of the process groups it
    started (recorded by its engine), wait until they are gone, record what was killed
    (``runner.orphans_killed``, in ``d``'s log and in those of ``also``) and print it.
    Groups of ``localhost`` are killed only if the dead runner ran on this host; groups on SSH
    hosts are killed over SSH; what cannot be reached is listed for the operator."""
    rows = store.processes(d["id"])
    if not rows:
        return []
    here = d["host"] == socket.gethostname()
    recs = [
        work.ProcRecord(r["host"], r["pid"], r["token"])
        for r in rows
        if r["host"] != "localhost" or here
    ]
    left = [f"pid {r['pid']} on {d['host']}" for r in rows if r["host"] == "localhost" and not here]
    killed, unreached = asyncio.run(_reap(store, d, recs, operator)) if recs else ([], [])
    left += unreached
    if killed or left:
        message = (
            f"runner of {d['id']} is dead ({live.why}): "
            + ("; ".join(killed) if killed else "nothing left running here")
            + (f"; not reached, check by hand: {', '.join(left)}" if left else "")
        )
        data = {"killed": killed, "left": left, "by": operator, "runner": live.as_json()}
        for deploy_id in (d["id"], *also):
            store.event(deploy_id, "runner.orphans_killed", message, data=_jsonable(data))
        _say(message)
    store.clear_processes(d["id"])
    return killed


async def _reap(
    store: Store, d: dict[str, Any], recs: list[work.ProcRecord], operator: str
) -> tuple[list[str], list[str]]:
    """Kill the recorded groups: local ones here, remote ones over SSH on their host (through
    the plan's fleet). Returns (killed, not reached)."""
    remote_recs = [r for r in recs if r.host != "localhost"]
    if not remote_recs:
        return await work.reap(recs), []
    unreached: list[str] = []
    fleet: Fleet | None = None
    holder: DeployFleet | None = None
    try:
        _, plan = _load_deploy(store, d["id"])
        overrides, _sel = split_overrides(d["overrides"])
        resolver = make_resolver(
            plan, d["plan_path"], d["id"], operator, overrides, _state_dir(store)
        )
        holder = DeployFleet(plan, resolver)
        fleet = holder.get()
    except Exception as exc:  # the plan no longer resolves: say so, kill what is local
        unreached += [f"pid {r.pid} on {r.host} ({exc})" for r in remote_recs]

    async def remote(rec: work.ProcRecord) -> bool:
        kill = getattr(fleet.host(rec.host), "kill_group", None) if fleet else None
        if kill is None:
            return False
        try:
            return bool(await kill(rec))
        except Exception as exc:  # unreachable host: the operator must check it
            unreached.append(f"pid {rec.pid} on {rec.host} ({type(exc).__name__}: {exc})")
            return False

    try:
        killed = await work.reap(recs, remote if fleet else None)
    finally:
        if holder is not None:
            await holder.close()
    return killed, unreached


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out[k] = _jsonable(v)
        elif hasattr(v, "isoformat"):
            out[k] = v.isoformat()
        else:
            out[k] = v
    return out
