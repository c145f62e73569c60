"""``kind: run``: a local shell command, with cwd, env, timeout, retries with backoff, output
streamed and captured, and shell-safe interpolation (each value escaped for the place it
stands in the command: see tminus.plan.shellquote)."""

from __future__ import annotations

from typing import Any, ClassVar

from tminus.hosts.local import LocalHost
from tminus.plan.interpolate import Resolver
from tminus.plan.steps import RunStep
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "RunKind", "resolve_command"]


def resolve_command(command: str | list[str], r: Resolver) -> str | list[str]:
    if isinstance(command, str):
        return r.resolve_shell(command)
    return r.resolve_argv(command)


class RunKind(StepKindBase):
    kind: ClassVar[str] = "run"
    own_timeout: ClassVar[bool] = True  # applied to the command

    async def execute(self, step: RunStep, ctx: StepContext) -> StepOutcome:
        r = ctx.resolver
        command = resolve_command(step.command, r)
        env = {k: r.resolve(v) for k, v in step.env.items()}
        env.setdefault("TMINUS_DEPLOY_ID", ctx.deploy_id)
        cwd = r.resolve(step.cwd) if step.cwd else None
        timeout = step.timeout.total_seconds() if step.timeout else None

        def on_line(stream: str, line: str) -> None:
            ctx.log(r.mask(line))

        run = await LocalHost().run(command, env=env, cwd=cwd, timeout=timeout, on_line=on_line)
        output = r.mask(run.stdout + (("\n[stderr]\n" + run.stderr) if run.stderr else ""))
        artifacts: dict[str, Any] = {
            "exit_code": run.exit_status,
            "stdout": r.mask(run.stdout.strip())[-4000:],
        }
        if run.timed_out:
            return StepOutcome(False, output, f"timed out after {timeout:g}s", artifacts)
        if run.exit_status not in step.expect_exit:
            tail = r.mask(run.stderr.strip() or run.stdout.strip())[-500:]
            return StepOutcome(
                False,
                output,
                f"exit status {run.exit_status}" + (f": {tail}" if tail else ""),
                artifacts,
            )
        return StepOutcome(True, output, None, artifacts)

    def compensation(self, step: RunStep, ctx: StepContext) -> Compensation | None:
        return None


KIND = RunKind()
