"""``kind: migrate``: a schema migration with alembic, a golang-migrate style directory of
``NNN_name.up.sql``/``NNN_name.down.sql`` files, or a pair of shell commands.

Every tool records the database's version **before** (artifact ``before``) and **after**
(artifact ``after``) the migration; ``on_rollback: down`` (the default) returns to the
before-version when the deploy rolls back.

How the before-version reaches the compensation
-----------------------------------------------
The engine asks for a step's compensation *before* the step runs, but the before-version is
only known once the step is running. Two ways were considered:

* an artifact reference (``revision: ${artifact:ID.before}`` in the compensation): it needs a
  step ``id`` (most migrate steps have none, and a missing id cannot be invented at run time),
  ``to:`` is an integer and cannot carry a reference, and artifacts are stored only when the
  step *finishes*, so a runner killed in the middle of a migration loses the before-version
  exactly when a rollback needs it;
* a **record file** ``<state_dir>/migrate/<deploy id>-<step key>.json`` (chosen). ``execute``
  writes it (write, fsync, atomic rename) when the step starts (``known: false``) and again,
  with the before-version (``known: true``), right before the first change to the database.
  The first attempt wins: a retry (``retries:``, ``--retry-step``) keeps the version from
  before the *first* attempt, not from after a half-applied one. No step id is needed, and the
  record survives a crash mid-migration.

The compensation is a copy of the step whose ``revision`` is ``before:<step key>`` (a marker:
"migrate down to the version recorded before that step"), ``idempotent: true`` (except the
command tool without a ``version`` command) and ``on_rollback: none`` (no undo of the undo).
Reading the record: missing → the step fails (the state directory was lost, or the rollback
runs on another machine: check by hand); ``known: false`` → the migration never changed
anything, nothing to undo; otherwise down to ``before``. Every down path is a no-op at the
target version already, so a rollback action re-run after a crash is safe. The compensation is
``partial_ok``: a migration that failed part-way (two of three files applied) is undone too,
and a dirty version table makes the undo fail loudly rather than report a clean rollback.

See docs/migrations.md for the tools, the version table and the dirty flag.

The tools live in :mod:`tminus.steps._migrate_sql_dir`, :mod:`tminus.steps._migrate_alembic` and
:mod:`tminus.steps._migrate_command`, behind the interface of :mod:`tminus.steps._migrate_tool`;
this module holds the kind, the before-version record and the compensation.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from tminus.files import private_dir, private_text
from tminus.plan.describe import MIGRATE_BEFORE_PREFIX
from tminus.plan.steps import MigrateStep, RestoreStep
from tminus.sqlrun import db_error
from tminus.steps._migrate_alembic import Alembic
from tminus.steps._migrate_command import Commands
from tminus.steps._migrate_sql_dir import VERSION_TABLE, SqlDir, split_sql
from tminus.steps._migrate_tool import Log, MigrateError, _shown, _Tool
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome

__all__ = [
    "BEFORE_PREFIX",
    "KIND",
    "VERSION_TABLE",
    "MigrateError",
    "MigrateKind",
    "SqlDir",
    "record_path",
    "split_sql",
]

#: ``revision`` of a compensation: "down to the version recorded before step <key>" (the
#: step's description says so: :func:`tminus.plan.describe.describe_step`).
BEFORE_PREFIX = MIGRATE_BEFORE_PREFIX


# --- the before-version record ---------------------------------------------------------------
def record_path(state_dir: Path, deploy_id: str, key: str) -> Path:
    """Where the before-version of the step at ``key`` of ``deploy_id`` is recorded."""
    return state_dir / "migrate" / f"{deploy_id}-{key.replace('/', '-')}.json"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    private_dir(path.parent)  # 0700, the record 0600
    tmp = path.with_name(path.name + ".tmp")
    with private_text(tmp) as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise MigrateError(f"cannot read the before-version record {path}: {exc}") from None
    if not isinstance(data, dict):
        raise MigrateError(f"the before-version record {path} is not a JSON object")
    return data


def _mark_started(path: Path, step: MigrateStep, ctx: StepContext) -> None:
    if path.exists():
        return
    _write_json(
        path,
        {
            "deploy_id": ctx.deploy_id,
            "key": ctx.key,
            "tool": step.tool,
            "database": step.database,
            "known": False,
            "before": None,
            "started_at": datetime.now(UTC).isoformat(),
        },
    )


def _record_before(path: Path, before: Any) -> Any:
    """Record ``before`` unless an earlier attempt did; returns the recorded version."""
    rec = _read_record(path) or {}
    if rec.get("known"):
        return rec.get("before")
    rec.update(known=True, before=before, recorded_at=datetime.now(UTC).isoformat())
    _write_json(path, rec)
    return before


# --- helpers ---------------------------------------------------------------------------------
def _down_key(step: MigrateStep) -> str | None:
    """The step key whose recorded before-version this (compensation) step migrates down to."""
    if step.revision.startswith(BEFORE_PREFIX):
        return step.revision[len(BEFORE_PREFIX) :]
    return None


# --- the kind --------------------------------------------------------------------------------
class MigrateKind(StepKindBase):
    kind: ClassVar[str] = "migrate"

    async def execute(self, step: MigrateStep, ctx: StepContext) -> StepOutcome:
        r = ctx.resolver
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        lines: list[str] = []

        def log(line: str) -> None:
            masked = r.mask(line)
            lines.append(masked)
            if threading.get_ident() == loop_thread:
                ctx.log(masked)
            else:
                loop.call_soon_threadsafe(ctx.log, masked)

        artifacts: dict[str, Any] = {"tool": step.tool}
        try:
            key = _down_key(step)
            if key is None:
                await self._up(step, ctx, log, artifacts)
            else:
                await self._down(step, ctx, key, log, artifacts)
        except MigrateError as exc:
            return StepOutcome(False, "\n".join(lines), r.mask(str(exc)), artifacts)
        except Exception as exc:  # driver, alembic and resolve errors vary
            return StepOutcome(False, "\n".join(lines), r.mask(db_error(exc)), artifacts)
        return StepOutcome(True, "\n".join(lines), None, artifacts)

    # the three tools behind one interface: current(), up(), down_to(version)
    def _tool(self, step: MigrateStep, ctx: StepContext, log: Log) -> _Tool:
        r = ctx.resolver
        db = ctx.plan.targets.databases.get(step.database)
        if db is None:
            raise MigrateError(f"database target '{step.database}' is not declared")
        url = r.resolve(db.url)
        if step.tool == "alembic":
            assert step.config is not None
            return Alembic(Path(r.resolve(step.config)), url, log, r.resolve(step.revision))
        if step.tool == "sql_dir":
            assert step.dir is not None
            return SqlDir(db.kind, url, Path(r.resolve(step.dir)), log, step.to)
        return Commands(step, ctx, url, log)

    async def _up(
        self, step: MigrateStep, ctx: StepContext, log: Log, artifacts: dict[str, Any]
    ) -> None:
        path = record_path(ctx.state_dir, ctx.deploy_id, ctx.key)
        _mark_started(path, step, ctx)
        tool = self._tool(step, ctx, log)
        now = await tool.current()
        artifacts["before"] = _record_before(path, now)
        log(f"version before: {_shown(now)}")
        if artifacts["before"] != now:
            log(f"version before the first attempt (kept for rollback): {artifacts['before']}")
        await tool.up()
        artifacts["after"] = await tool.current()
        log(f"version after: {_shown(artifacts['after'])}")

    async def _down(
        self,
        step: MigrateStep,
        ctx: StepContext,
        key: str,
        log: Log,
        artifacts: dict[str, Any],
    ) -> None:
        path = record_path(ctx.state_dir, ctx.deploy_id, key)
        rec = _read_record(path)
        if rec is None:
            raise MigrateError(
                f"no before-version was recorded for step {key} ({path} is missing: the state "
                "directory was lost, or this runs on another machine); check the database "
                "and migrate it down by hand"
            )
        if not rec.get("known"):
            log(f"step {key} never changed the database: nothing to undo")
            return
        target = rec.get("before")
        artifacts["target"] = target
        tool = self._tool(step, ctx, log)
        log(f"returning to version {_shown(target)}, recorded before step {key}")
        await tool.down_to(target)
        artifacts["after"] = await tool.current()
        log(f"version after: {_shown(artifacts['after'])}")

    def compensation(self, step: MigrateStep, ctx: StepContext) -> Compensation | None:
        if _down_key(step) is not None or step.on_rollback == "none":
            return None
        if step.on_rollback == "restore":
            restore = RestoreStep.model_validate(
                {
                    "kind": "restore",
                    "from": step.backup,
                    "database": step.database,
                    "name": f"Restore {step.database} from backup '{step.backup}'",
                    # Restoring the same verified backup again gives the same data.
                    "idempotent": True,
                }
            )
            return Compensation(restore, partial_ok=True)
        down = step.model_copy(
            update={
                "id": None,
                "name": f"Migrate {step.database} back down (undo of: {step.title()})",
                "revision": BEFORE_PREFIX + ctx.key,
                "on_rollback": "none",
                # Without a version command the down of the command tool cannot tell whether
                # it already ran: a crash in the middle pauses for the operator instead.
                "idempotent": step.tool != "command" or step.version is not None,
                "undo": [],
            }
        )
        return Compensation(down, partial_ok=True)


KIND = MigrateKind()
