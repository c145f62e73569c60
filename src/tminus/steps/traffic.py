"""``kind: traffic``: set the split of a router's pools, in one router call.

The undo: a compensation must be registered *before* the step runs (so that it survives a
crash), but the split to go back to is only known by asking the router, which is async and
can fail. So the compensation is a ``traffic`` step with ``restore: <this step's key>``, and
the step, before it changes anything, reads the router's split and records it in
``<state dir>/undo/<deploy>/<key>.json`` (written once: a retry or a re-run after a crash keeps
the split from before the first attempt). On rollback the restore step reads that record and
applies it in one router call. No record means the step never reached the router, and the
restore is a no-op. The split before and after is also in the step's artifacts and events.

A router may also offer ``snapshot()``/``restore(snapshot)`` (duck-typed, optional: the
``flags`` router does, so that a flag the step created is removed again rather than left at
0%); the record then holds the snapshot and the undo restores it, checking that the split
read back is the recorded one.

The same record is used by ``flag`` steps (:mod:`tminus.steps.flag`) and by any step kind
that changes a router (:func:`record_before` / :func:`recorded_before`): ``canary`` and
``blue_green`` record the router with :func:`record_router` (the split, the cookie route when
the router has a cookie, a flags router's snapshot) before their first change, and their
compensation is this step with ``restore:``, which also puts the cookie route back (or
removes it) exactly as recorded.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from tminus.errors import TminusError
from tminus.files import private_dir, private_text
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import FlagStep, TrafficStep
from tminus.routers.base import (
    Router,
    RouterContext,
    check_weights,
    open_router,
    router_for_step,
)
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = [
    "KIND",
    "TrafficKind",
    "record_before",
    "record_path",
    "record_router",
    "recorded_before",
    "restore_compensation",
]


def record_path(ctx: StepContext, key: str) -> Path:
    """Where the state recorded before the step ``key`` of this deploy lives."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    return ctx.state_dir / "undo" / ctx.deploy_id / f"{safe}.json"


def record_before(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    """Record ``data`` for the current step unless a record exists (then that one is kept, and
    returned): what its undo restores."""
    existing = recorded_before(ctx, ctx.key)
    if existing is not None:
        return existing
    path = record_path(ctx, ctx.key)
    private_dir(path.parent)  # 0700, the record 0600: it may hold a router's config
    tmp = path.with_suffix(".tmp")
    with private_text(tmp) as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return data


def recorded_before(ctx: StepContext, key: str) -> dict[str, Any] | None:
    """What the step ``key`` recorded before it changed anything (``None``: nothing)."""
    try:
        data: dict[str, Any] = json.loads(record_path(ctx, key).read_text())
    except FileNotFoundError:
        return None
    return data


async def record_router(
    ctx: StepContext, router: Router, name: str, *, cookie: bool = False
) -> dict[str, Any]:
    """Record the router ``name`` as it is now for the current step, unless already recorded
    (then the first record is kept and returned): its split, with ``cookie`` its cookie
    route (``None``: no route), and a snapshot when the router offers one (a flags router)."""
    existing = recorded_before(ctx, ctx.key)
    if existing is not None:
        return existing
    data: dict[str, Any] = {"router": name, "weights": await router.get_weights()}
    if cookie:
        data["cookie_route"] = await router.get_cookie_route()
    snapshot = getattr(router, "snapshot", None)
    if snapshot is not None:
        data["snapshot"] = await snapshot()
    return record_before(ctx, data)


def restore_compensation(
    kind: Literal["traffic", "flag"], key: str, name: str, **target: str
) -> Compensation:
    """The undo of a step that records what it changes before changing it
    (:func:`record_before`): a ``kind`` step on the same ``target`` (``router=…``;
    ``store=…, flag=…``) with ``restore: key``, which puts back what ``key`` recorded (a no-op
    when nothing was); idempotent and ``partial_ok`` (part of the change may stand even if the
    step failed). The one compensation of ``traffic``, ``flag``, ``canary`` and ``blue_green``."""
    model: type[TrafficStep | FlagStep] = FlagStep if kind == "flag" else TrafficStep
    undo = model.model_validate(
        {"kind": kind, **target, "restore": key, "name": name, "idempotent": True}
    )
    return Compensation(undo, partial_ok=True)


def _fmt(weights: dict[str, int]) -> str:
    return ", ".join(f"{p} {w}%" for p, w in weights.items())


class TrafficKind(StepKindBase):
    kind: ClassVar[str] = "traffic"

    async def execute(self, step: TrafficStep, ctx: StepContext) -> StepOutcome:
        try:
            if step.restore is not None:
                return await self._restore(step, ctx)
            router = router_for_step(ctx, step.router)
            target = check_weights(step.weights, router.pools())
            before = await router.get_weights()
            data: dict[str, Any] = {"router": step.router, "weights": before}
            snapshot = getattr(router, "snapshot", None)
            if snapshot is not None and ctx.key and recorded_before(ctx, ctx.key) is None:
                data["snapshot"] = await snapshot()
            record = record_before(ctx, data)
            previous: dict[str, int] = record["weights"]
            ctx.emit(
                "traffic.before",
                f"{step.router}: {_fmt(previous)}",
                {"router": step.router, "weights": previous},
            )
            await router.set_weights(target)
            after = await router.get_weights()
        except TminusError as exc:
            return StepOutcome(False, error=ctx.resolver.mask(str(exc)))
        artifacts = {"router": step.router, "previous": previous, "weights": after}
        if after != target:
            return StepOutcome(
                False,
                error=f"router {step.router} reports {_fmt(after)} after setting {_fmt(target)}",
                artifacts=artifacts,
            )
        ctx.emit("traffic.set", f"{step.router}: {_fmt(after)}", artifacts)
        return StepOutcome(
            True, f"{step.router}: {_fmt(before)} → {_fmt(after)}", artifacts=artifacts
        )

    async def _restore(self, step: TrafficStep, ctx: StepContext) -> StepOutcome:
        assert step.restore is not None
        record = recorded_before(ctx, step.restore)
        if record is None:
            return StepOutcome(
                True, f"nothing to restore: step {step.restore} never changed {step.router}"
            )
        weights: dict[str, int] = record["weights"]
        router = router_for_step(ctx, record.get("router", step.router))
        if sum(weights.values()) != 100:
            return StepOutcome(
                False,
                error=f"the split recorded before {step.restore} ({_fmt(weights)}) does not sum "
                "to 100; set the router by hand",
            )
        ctx.emit(
            "traffic.restoring",
            f"{step.router}: back to {_fmt(weights)} as recorded before {step.restore}",
            {k: v for k, v in record.items() if k != "snapshot"},
        )
        if "cookie_route" in record:  # first, so cookie holders leave a pool going away
            await router.set_cookie_route(record["cookie_route"])
        restore = getattr(router, "restore", None)
        if "snapshot" in record and restore is not None:
            await restore(record["snapshot"])  # exactly as it was (a flags router)
        else:
            await router.set_weights(weights, urgent=True)
        after = await router.get_weights()
        if after != weights:
            return StepOutcome(
                False,
                error=f"router {step.router} reports {_fmt(after)} after restoring {_fmt(weights)}",
            )
        done: dict[str, Any] = {"weights": after}
        text = f"{step.router} back to {_fmt(after)}"
        if "cookie_route" in record:
            route = await router.get_cookie_route()
            if route != record["cookie_route"]:
                return StepOutcome(
                    False,
                    error=f"router {step.router} routes the cookie to {route} after restoring "
                    f"{record['cookie_route']}",
                )
            done["cookie_route"] = route
            text += f", cookie route {route or 'none'}"
        ctx.emit("traffic.restored", f"{step.router}: {_fmt(after)}", done)
        return StepOutcome(True, text, artifacts=done)

    def compensation(self, step: TrafficStep, ctx: StepContext) -> Compensation | None:
        if step.restore is not None:
            return None
        return restore_compensation(
            "traffic", ctx.key, f"Restore the traffic split of {step.router}", router=step.router
        )

    def preflight(
        self, step: TrafficStep, plan: Plan, resolver: Resolver, state_dir: Path
    ) -> list[str]:
        problems: list[str] = []
        if step.restore is None and sum(step.weights.values()) != 100:
            problems.append(
                f"traffic step on router '{step.router}': the weights sum to "
                f"{sum(step.weights.values())}, not 100"
            )
        config = plan.targets.routers.get(step.router)
        if config is not None:
            try:
                open_router(
                    step.router,
                    RouterContext(step.router, resolver, state_dir, {}, plan.targets.flag_stores),
                    config,
                )
            except TminusError as exc:
                problems.append(resolver.mask(str(exc)))
        return problems


KIND = TrafficKind()
