"""``kind: maintenance``: maintenance mode on or off, by commands or a flag file.

Turning it on registers, *before* it runs, a compensation that turns it off; the engine also
turns it off when the phase ends, fails or is rolled back, and records how long it was on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from tminus.hosts.local import LocalHost
from tminus.plan.model import MaintenanceConfig, Plan
from tminus.plan.steps import MaintenanceStep, StepBase
from tminus.steps.base import Compensation, Span, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "MaintenanceKind", "effective"]


def effective(step: MaintenanceStep, cfg: MaintenanceConfig | None) -> MaintenanceStep:
    """The step with the plan's maintenance settings filled in."""
    if step.enable or step.disable or step.flag_file or cfg is None:
        return step
    return step.model_copy(
        update={"enable": cfg.enable, "disable": cfg.disable, "flag_file": cfg.flag_file}
    )


class MaintenanceKind(StepKindBase):
    kind: ClassVar[str] = "maintenance"
    rerun_safe: ClassVar[bool] = True

    async def execute(self, step: MaintenanceStep, ctx: StepContext) -> StepOutcome:
        s = effective(step, ctx.plan.maintenance)
        r = ctx.resolver
        on = s.action == "on"
        if s.flag_file:
            path = Path(r.resolve(s.flag_file))
            if on:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"maintenance by tminus deploy {ctx.deploy_id}\n")
            else:
                path.unlink(missing_ok=True)
        command = s.enable if on else s.disable
        if command:
            run = await LocalHost().run(r.resolve_shell(command), timeout=300)
            if not run.ok:
                err = r.mask((run.stderr or run.stdout).strip())[-300:]
                return StepOutcome(
                    False, err, f"maintenance {s.action} failed: exit {run.exit_status}"
                )
        ctx.emit("maintenance." + s.action, f"maintenance {s.action}", None)
        return StepOutcome(True, f"maintenance {s.action}", artifacts={"maintenance": s.action})

    def compensation(self, step: MaintenanceStep, ctx: StepContext) -> Compensation | None:
        if step.action != "on":
            return None
        s = effective(step, ctx.plan.maintenance)
        off = s.model_copy(
            update={"action": "off", "name": "Maintenance mode off", "id": None, "idempotent": True}
        )
        return Compensation(off, partial_ok=True)

    def maintenance_span(self, step: MaintenanceStep) -> Span | None:
        return "open" if step.action == "on" else "close"

    def span_step(self, plan: Plan, steps: Sequence[StepBase], span: Span) -> StepBase | None:
        """Maintenance on/off with the settings of the first of ``steps`` that has its own,
        else with the plan's ``maintenance:``; None if neither has any."""
        action = "on" if span == "open" else "off"
        own = [
            m
            for m in steps
            if isinstance(m, MaintenanceStep) and (m.flag_file or (m.enable and m.disable))
        ]
        if own:
            return own[0].model_copy(
                update={"action": action, "until": None, "keep": False, "id": None, "undo": []}
            )
        if plan.maintenance is None:
            return None
        return MaintenanceStep(kind="maintenance", action=action)


KIND = MaintenanceKind()
