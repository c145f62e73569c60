"""The data step kinds: backup, restore, verify_backup, migrate, snapshot."""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from tminus.plan._base import Name, PlanModel
from tminus.plan._step_base import StepBase

from ._base import new_list

__all__ = [
    "BackupFrom",
    "BackupRef",
    "BackupStep",
    "MigrateStep",
    "RestoreStep",
    "SnapshotStep",
    "VerifyBackupStep",
]


class BackupStep(StepBase):
    """Back up a database or a path target; writes a verified manifest."""

    kind: Literal["backup"]
    database: Name | None = None
    path: Name | None = None
    dest: str | None = Field(None, description="Directory for backups; default .tminus/backups.")
    jobs: int = Field(2, ge=1, le=64)

    @model_validator(mode="after")
    def _one_target(self) -> "BackupStep":
        if (self.database is None) == (self.path is None):
            raise ValueError("a backup step needs exactly one of 'database' or 'path'")
        return self


class BackupRef(PlanModel):
    """A backup an earlier deploy made: ``{deploy: latest, backup: db_backup}``."""

    deploy: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="'latest' (the newest deploy of this plan and environment whose backup "
        "verifies; for an operation: of its plan) or a deploy id such as shop-12."
    )
    backup: Name = Field(description="The id of the backup step that made it.")

    def __str__(self) -> str:
        return f"{self.backup} of deploy {self.deploy}"


#: ``from:`` of a restore or verify_backup step: a backup step id of this deploy, or a backup
#: of an earlier deploy.
BackupFrom = Name | BackupRef


class RestoreStep(StepBase):
    """Restore a backup artifact (the latest backup of the same target by default)."""

    kind: Literal["restore"]
    from_: BackupFrom = Field(
        alias="from",
        description="The id of the backup step (of this deploy), or {deploy: latest|ID, "
        "backup: ID} for a backup an earlier deploy made.",
    )
    database: Name | None = None
    path: Name | None = None
    jobs: int = Field(2, ge=1, le=64)


class VerifyBackupStep(StepBase):
    """Restore into a scratch copy, compare with the manifest, drop the copy."""

    kind: Literal["verify_backup"]
    from_: BackupFrom = Field(
        alias="from",
        description="The id of the backup step (of this deploy), or {deploy: latest|ID, "
        "backup: ID} for a backup an earlier deploy made.",
    )


class MigrateStep(StepBase):
    """A schema migration: alembic, a directory of up/down SQL files, or a pair of commands."""

    kind: Literal["migrate"]
    database: Name
    tool: Literal["alembic", "sql_dir", "command"]
    config: str | None = Field(None, description="alembic: path of alembic.ini.")
    revision: str = Field("head", description="alembic: target revision.")
    dir: str | None = Field(None, description="sql_dir: directory of NNN_name.up/down.sql.")
    to: int | None = Field(None, description="sql_dir: target version; default latest.")
    up: str | None = Field(None, description="command: migrate up.")
    down: str | None = Field(None, description="command: migrate down to $TMINUS_VERSION.")
    version: str | None = Field(None, description="command: prints the current version.")
    on_rollback: Literal["down", "restore", "none"] = "down"
    backup: Name | None = Field(None, description="Backup step restored when on_rollback: restore.")

    @model_validator(mode="after")
    def _tool_fields(self) -> "MigrateStep":
        need = {"alembic": ["config"], "sql_dir": ["dir"], "command": ["up"]}[self.tool]
        missing = [f for f in need if getattr(self, f) is None]
        if missing:
            raise ValueError(f"migrate with tool '{self.tool}' needs '{missing[0]}'")
        if self.on_rollback == "restore" and not self.backup:
            raise ValueError("on_rollback: restore needs 'backup' (the id of a backup step)")
        return self


class SnapshotStep(StepBase):
    """Record tables, indexes, row counts and file counts for a later no_data_loss check."""

    kind: Literal["snapshot"]
    databases: list[Name] = Field(default_factory=new_list)
    paths: list[Name] = Field(default_factory=new_list)
