"""The ``command`` tool of ``kind: migrate``: the step's ``up``, ``down`` and ``version`` shell
commands, run on the local host with the database URL in the environment."""

from __future__ import annotations

from typing import Any

from tminus.hosts.local import LocalHost
from tminus.plan.steps import MigrateStep
from tminus.steps._migrate_tool import Log, MigrateError, _shown
from tminus.steps.base import StepContext

__all__ = ["Commands"]


# --- command ---------------------------------------------------------------------------------
class Commands:
    """Shell commands: ``up``, ``down`` (target in ``$TMINUS_VERSION``), ``version``."""

    def __init__(self, step: MigrateStep, ctx: StepContext, url: str, log: Log) -> None:
        self.step = step
        self.ctx = ctx
        self.log = log
        self.env = {"TMINUS_DEPLOY_ID": ctx.deploy_id, "TMINUS_DATABASE_URL": url}

    async def _run(self, what: str, command: str, env: dict[str, str]) -> str:
        r = self.ctx.resolver
        run = await LocalHost().run(
            r.resolve_shell(command),
            env={**self.env, **env},
            on_line=lambda _stream, line: self.log(line),
        )
        if not run.ok:
            tail = (run.stderr.strip() or run.stdout.strip())[-500:]
            status = "timed out" if run.timed_out else f"exit status {run.exit_status}"
            raise MigrateError(f"{what} command failed: {status}" + (f": {tail}" if tail else ""))
        return run.stdout

    async def current(self) -> str | None:
        if not self.step.version:
            return None
        out = await self._run("version", self.step.version, {})
        return out.strip() or None

    async def up(self) -> None:
        assert self.step.up is not None
        await self._run("up", self.step.up, {})

    async def down_to(self, target: Any) -> None:
        before = None if target is None else str(target)
        if not self.step.down:
            raise MigrateError(
                "this migrate step has no 'down' command, so it cannot be undone: migrate down "
                "by hand (set on_rollback: none or restore to say so in the plan)"
            )
        if self.step.version:
            now = await self.current()
            if now == before:
                self.log(f"already at version {_shown(before)}: nothing to undo")
                return
        await self._run("down", self.step.down, {"TMINUS_VERSION": before or ""})
