"""The ``required: true`` channels: a run does not go past a point before their messages
are delivered (it waits up to the channel's bound, then pauses), and what resume does then."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tminus.engine.delivery import deliver_for
from tminus.plan.model import Plan

if TYPE_CHECKING:
    from tminus.engine.engine import Engine
    from tminus.engine.program import Node
    from tminus.states import DeployState

__all__ = ["REQUIRED_WITHIN_S", "answer_required", "required_gate"]

#: How long a run waits for a message to a ``required: true`` channel before it pauses
#: (a channel's ``required_within`` says otherwise).
REQUIRED_WITHIN_S = 60.0


def _required(plan: Plan) -> dict[str, float]:
    """The required channels and how long a run waits for each (seconds)."""
    return {
        name: ch.required_within.total_seconds() if ch.required_within else REQUIRED_WITHIN_S
        for name, ch in plan.notifications.channels.items()
        if ch.required
    }


def _undelivered(engine: Engine, required: Mapping[str, float]) -> list[dict[str, Any]]:
    """The deploy's messages to required channels not delivered yet, except those the
    operator let go (``tminus resume --skip-step``)."""
    rows = [
        r
        for r in engine.store.outbox(engine.deploy_id)
        if r["channel"] in required and r["state"] != "sent"
    ]
    if not rows:
        return []
    waived = {
        str(k)
        for e in engine.store.events(engine.deploy_id, types=("notify.waived",))
        for k in (e["data"] or {}).get("keys", [])
    }
    return [r for r in rows if r["key"] not in waived]


async def required_gate(engine: Engine, node: Node) -> DeployState | None:
    """Before the run goes past a point: every message recorded for a ``required: true``
    channel must be delivered. Waits (sending them) up to the channel's bound; if one failed
    for good or is still not delivered, the deploy pauses (``notify.blocked``), its reason
    naming the channel and the receiver's answer. None: go on."""
    required = _required(engine.plan)
    if not required:
        return None
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        rows = _undelivered(engine, required)
        if not rows:
            return None
        waited = loop.time() - start
        failed = next((r for r in rows if r["state"] == "failed"), None)
        late = next((r for r in rows if waited >= required[r["channel"]]), None)
        blocked = failed or late
        if blocked is not None:
            title = str(blocked["message"].get("title") or blocked["key"])
            answer = blocked["detail"] or "no answer yet"
            if failed is not None:
                reason = (
                    f"required channel '{blocked['channel']}' could not be sent '{title}': {answer}"
                )
            else:
                reason = (
                    f"required channel '{blocked['channel']}' did not get '{title}' within "
                    f"{required[blocked['channel']]:g} s: {answer}"
                )
            reason += (
                f" (fix the channel, then `tminus resume {engine.deploy_id}` sends it again; "
                "`--skip-step` goes on without it)"
            )
            engine._event(
                "notify.blocked",
                reason,
                {"channel": blocked["channel"], "keys": [r["key"] for r in rows]},
                key=node.key,
            )
            return engine._pause(node, reason)
        await deliver_for(engine)
        await asyncio.sleep(0.2)


def answer_required(engine: Engine, action: str) -> str:
    """On resume: the messages to required channels that failed are queued again (the
    operator fixed the channel); if the deploy paused for one of them, ``--skip-step`` lets
    them go (``notify.waived``: the run no longer waits for them; they are still sent) and
    ``--retry-step`` is that plain resume. Returns the action left for the steps."""
    required = _required(engine.plan)
    if not required:
        return action
    rows = _undelivered(engine, required)
    seen = engine.store.events(engine.deploy_id, types=("notify.blocked", "deploy.running"))
    ours = bool(seen) and seen[-1]["type"] == "notify.blocked"
    if ours and action == "skip":
        keys = [r["key"] for r in rows]
        engine._event(
            "notify.waived",
            f"{engine.operator} let {len(keys)} message(s) to required channels go",
            {"keys": keys},
        )
        engine.reporter.line(f"going on without {len(keys)} message(s) to required channels")
        return ""
    for r in rows:
        if r["state"] == "failed":
            engine.store.resend(int(r["id"]))
            engine._event(
                "notify.resend", f"message {r['id']} to required channel {r['channel']} again"
            )
    return "" if ours and action == "retry" else action
