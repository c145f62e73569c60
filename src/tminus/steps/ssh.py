"""``kind: ssh``: a shell command on every host of a host or group, in rolling batches, with
``max_fail``, per-host timeout and retries, ``before_batch``/``after_batch`` hooks and
``run_once``. See :mod:`tminus.steps._fleet` and docs/fleet.md."""

from __future__ import annotations

from typing import Any, ClassVar

from tminus.hosts.base import Host
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import SshStep
from tminus.steps import _fleet
from tminus.steps._fleet import HostResult, tail
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = ["KIND", "SshKind"]


class SshKind(StepKindBase):
    kind: ClassVar[str] = "ssh"
    #: The step's timeout and retries apply to each host, not to the whole step.
    per_host: ClassVar[bool] = True
    own_timeout: ClassVar[bool] = True

    async def execute(self, step: SshStep, ctx: StepContext) -> StepOutcome:
        problem = _fleet.check_on(step, ctx)
        if problem is not None:
            return _fleet.failed_outcome(problem, ctx)
        become = step.become if step.become else None

        async def work(name: str, host: Host, r: Resolver, timeout: float | None) -> HostResult:
            command = r.resolve_shell(step.command)
            env = {k: r.resolve(v) for k, v in step.env.items()}
            env.setdefault("TMINUS_DEPLOY_ID", ctx.deploy_id)
            env.setdefault("TMINUS_HOST", name)
            cwd = r.resolve(step.cwd) if step.cwd else None
            run = await host.run(command, env=env, cwd=cwd, timeout=timeout, become=become)
            res = HostResult(name, exit=run.exit_status, stdout=run.stdout, stderr=run.stderr)
            if run.timed_out:
                res.status, res.error = "failed", f"timed out after {timeout:g}s"
            elif run.exit_status is None:
                res.status = "failed"
                res.error = (run.stderr.strip().splitlines() or ["connection failed"])[-1]
            elif run.exit_status != 0:
                res.status = "failed"
                res.error = tail(run.stderr.strip() or run.stdout.strip(), 300) or None
            return res

        outcome, results = await _fleet.rollout(ctx, step, [work])
        ran = [r for r in results.values() if r.attempts]
        if len(ran) == 1:  # one host (or run_once): its output is the step's output
            only = ran[0]
            outcome.artifacts.update(
                host=only.host, exit_code=only.exit, stdout=tail(only.stdout.strip())
            )
            for line in only.stdout.splitlines()[-50:]:
                ctx.log(ctx.resolver.mask(f"  {line}"))
            if only.stdout.strip():
                outcome.output = only.stdout + "\n" + outcome.output
        return outcome

    def compensation(self, step: SshStep, ctx: StepContext) -> Compensation | None:
        return None

    def preflight(self, step: SshStep, plan: Plan, resolver: Resolver, state_dir: Any) -> list[str]:
        return _fleet.host_key_problems(step, plan, resolver)


KIND = SshKind()
