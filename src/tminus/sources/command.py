"""``source: command``: a local command; the value is its stdout (a number if it parses)."""

from __future__ import annotations

from typing import ClassVar

from tminus.hosts.local import LocalHost
from tminus.plan.checks import CommandCheck
from tminus.plan.values import parse_quantity
from tminus.sources.base import CheckContext, Measurement

__all__ = ["SOURCE", "CommandSource"]


class CommandSource:
    source: ClassVar[str] = "command"

    async def measure(self, check: CommandCheck, ctx: CheckContext) -> Measurement:
        r = ctx.resolver
        command = (
            r.resolve_shell(check.command)
            if isinstance(check.command, str)
            else r.resolve_argv(check.command)
        )
        env = {k: r.resolve(v) for k, v in check.env.items()}
        timeout = check.timeout.total_seconds() if check.timeout else 60.0
        run = await LocalHost().run(command, env=env, cwd=check.cwd, timeout=timeout)
        out = r.mask(run.stdout.strip())
        if run.timed_out:
            return Measurement(error=f"timed out after {timeout:g}s")
        if check.metric == "exit_code":
            return Measurement(value=run.exit_status, ok=True, message=f"exit {run.exit_status}")
        number = parse_quantity(out) if out else None
        value: object = number if number is not None else out
        if not (check.expect or check.warn or check.critical):
            value = run.exit_status
        msg = f"exit {run.exit_status}" + (f": {out[-200:]}" if out else "")
        if run.exit_status != 0:
            err = r.mask(run.stderr.strip())[-300:]
            msg = f"exit {run.exit_status}" + (f": {err}" if err else "")
        return Measurement(value=value, ok=run.exit_status == 0, message=msg)


SOURCE = CommandSource()
