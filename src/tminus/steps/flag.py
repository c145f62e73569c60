"""``kind: flag``: set a feature flag's percentage and/or switch it on or off in a flag store.

Its undo restores the flag exactly as it was (the store's own snapshot of it, recorded before
the change, see :mod:`tminus.steps.traffic`); a flag the step created is removed again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tminus.errors import TminusError
from tminus.flags.base import FlagState, flag_store_for_step, open_flag_store
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import FlagStep
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome
from tminus.steps.traffic import record_before, recorded_before, restore_compensation

__all__ = ["KIND", "FlagKind"]


def _fmt(state: FlagState | dict[str, Any] | None) -> str:
    if state is None:
        return "absent"
    d = state.to_dict() if isinstance(state, FlagState) else state
    return f"{'on' if d['enabled'] else 'off'}, {float(d['percentage']):g}%"


class FlagKind(StepKindBase):
    kind: ClassVar[str] = "flag"

    async def execute(self, step: FlagStep, ctx: StepContext) -> StepOutcome:
        flag = ctx.resolver.resolve(step.flag)
        try:
            store = flag_store_for_step(ctx, step.store)
            if step.restore is not None:
                return await self._restore(step, ctx, flag)
            before = await store.get(flag)
            record = record_before(
                ctx,
                {
                    "store": step.store,
                    "flag": flag,
                    "snapshot": await store.snapshot(flag),
                    "state": before.to_dict() if before else None,
                },
            )
            ctx.emit("flag.before", f"{flag}: {_fmt(record['state'])}", record)
            written = await store.update(flag, percentage=step.percentage, enabled=step.enabled)
            after = await store.get(flag)
        except TminusError as exc:
            return StepOutcome(False, error=ctx.resolver.mask(str(exc)))
        artifacts = {
            "store": step.store,
            "flag": flag,
            "previous": record["state"],
            "state": after.to_dict() if after else None,
        }
        wanted_pct = round(step.percentage, 3) if step.percentage is not None else None
        if (
            after is None
            or after != written
            or (wanted_pct is not None and after.percentage != wanted_pct)
            or (step.enabled is not None and after.enabled != step.enabled)
        ):
            return StepOutcome(
                False,
                error=f"flag {flag} reads back as {_fmt(after)} after writing {_fmt(written)}",
                artifacts=artifacts,
            )
        ctx.emit("flag.set", f"{flag}: {_fmt(after)}", artifacts)
        return StepOutcome(
            True, f"{flag} in {step.store}: {_fmt(before)} → {_fmt(after)}", artifacts=artifacts
        )

    async def _restore(self, step: FlagStep, ctx: StepContext, flag: str) -> StepOutcome:
        assert step.restore is not None
        record = recorded_before(ctx, step.restore)
        if record is None:
            return StepOutcome(
                True, f"nothing to restore: step {step.restore} never changed {flag}"
            )
        store = flag_store_for_step(ctx, record.get("store", step.store))
        await store.restore(record.get("flag", flag), record["snapshot"])
        after = await store.get(record.get("flag", flag))
        ctx.emit("flag.restored", f"{flag}: {_fmt(after)}", {"state": _fmt(after)})
        return StepOutcome(True, f"{flag} back to {_fmt(after)}")

    def compensation(self, step: FlagStep, ctx: StepContext) -> Compensation | None:
        if step.restore is not None:
            return None
        return restore_compensation(
            "flag", ctx.key, f"Restore flag {step.flag}", store=step.store, flag=step.flag
        )

    def preflight(
        self, step: FlagStep, plan: Plan, resolver: Resolver, state_dir: Path
    ) -> list[str]:
        config = plan.targets.flag_stores.get(step.store)
        if config is None:
            return []
        try:
            open_flag_store(step.store, config, resolver)
        except TminusError as exc:
            return [resolver.mask(str(exc))]
        return []


KIND = FlagKind()
