"""What ``canary`` and ``blue_green`` share: the set-up before their first router change.

:func:`start` reads the step's checks (``use:`` resolved, ``interval: ${…}`` read now), builds
the step's router (cached for the deploy) and loads the step's :class:`Progress`; the
:class:`Rollout` it returns collects the step's output lines and records the router for the
step's compensation (:func:`tminus.steps.traffic.record_router`, written once).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tminus.files import private_dir, private_text
from tminus.plan.checks import CheckBase, CheckUse
from tminus.plan.durations import resolve_durations
from tminus.plan.targets import cookie_parts
from tminus.plan.walk import resolve_check
from tminus.routers.base import Router, router_for_step
from tminus.sources.base import check_name
from tminus.steps.base import StepContext, StepOutcome
from tminus.steps.traffic import record_router

__all__ = ["Progress", "Rollout", "resolve_checks", "router_cookie", "start"]


def router_cookie(ctx: StepContext, router: str) -> str | None:
    """The name of the router target's canary cookie, if it declares one."""
    target = ctx.plan.targets.routers.get(router)
    parts = cookie_parts(getattr(target, "cookie", None))
    return parts[0] if parts else None


def resolve_checks(ctx: StepContext, refs: Sequence[CheckBase | CheckUse]) -> list[CheckBase]:
    """The declared checks behind ``use:`` references, with ``interval: ${every}`` read now;
    a missing check, or an interval that does not resolve to a duration, is a ValueError."""
    out: list[CheckBase] = []
    for ref in refs:
        check = resolve_check(ctx.plan, ref)
        if check is None:
            name = ref.use if isinstance(ref, CheckUse) else "check"
            raise ValueError(f"check '{name}' is not defined")
        try:
            check = resolve_durations(check, ctx.resolver)
        except ValueError as exc:  # ResolveError included
            raise ValueError(ctx.resolver.mask(f"check '{check_name(check)}': {exc}")) from None
        out.append(check)
    return out


@dataclass
class Progress:
    """What a step reached, kept across runs of the same step of the same deploy."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, ctx: StepContext) -> Progress:
        safe = ctx.key.replace("/", "_")
        path = ctx.state_dir / "progress" / ctx.deploy_id / f"{safe}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        return cls(path, data if isinstance(data, dict) else {})

    def save(self, **values: Any) -> None:
        self.data.update(values)
        private_dir(self.path.parent)  # 0700, the file 0600
        tmp = self.path.with_suffix(".tmp")
        with private_text(tmp) as fh:
            json.dump(self.data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def clear(self, *keep: str) -> None:
        self.data = {k: v for k, v in self.data.items() if k in keep}
        self.save()

    @property
    def consumed(self) -> set[int]:
        return {int(i) for i in self.data.get("consumed", [])}


@dataclass
class Rollout:
    """One run of a canary or blue_green step: its router (``name`` in the plan), the canary
    cookie the router declares (None: none), its checks, its progress, its output lines."""

    ctx: StepContext
    name: str
    router: Router
    cookie: str | None
    checks: list[CheckBase]
    progress: Progress
    lines: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        """A line of the step's output, logged as it happens."""
        self.lines.append(text)
        self.ctx.log(text)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def record(self) -> None:
        """Record the router as it is now, before the step's first change (kept on re-runs):
        what the step's compensation puts back."""
        await record_router(self.ctx, self.router, self.name, cookie=bool(self.cookie))


def start(
    ctx: StepContext, router: str, checks: Sequence[CheckBase | CheckUse]
) -> Rollout | StepOutcome:
    """Set up a canary or blue_green step on ``router`` with ``checks``; a check that cannot
    be resolved is the step's failure (nothing was changed)."""
    try:
        resolved = resolve_checks(ctx, checks)
    except ValueError as exc:
        return StepOutcome(False, error=str(exc))
    return Rollout(
        ctx,
        router,
        router_for_step(ctx, router),
        router_cookie(ctx, router),
        resolved,
        Progress.load(ctx),
    )
