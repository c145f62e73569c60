"""Steps: one action with an optional undo, a union on ``kind``.

The built-in kinds are declared in ``_steps_basic`` (run, http, sql, wait, approve,
maintenance, notify), ``_steps_fleet`` (ssh, upload, release), ``_steps_data`` (backup,
restore, verify_backup, migrate, snapshot), ``_steps_traffic`` (traffic, flag, canary,
blue_green) and ``_steps_kube`` (kubernetes); fields shared by all kinds live on
:class:`StepBase`. This module makes the union :data:`Step` and re-exports every model, so
``from tminus.plan.steps import X`` is the one import.

**Third-party kinds.** A package adds a kind with two entry points: its pydantic model (a
:class:`StepBase` subclass with ``kind: Literal["<name>"]``) in the group
:data:`MODEL_GROUP` (``tminus.step_models``), read here, and its implementation in the group
``tminus.steps``, read by :mod:`tminus.steps.registry` when a deploy runs it. The union has one
member for every built-in kind and one for all plug-in kinds: a step whose ``kind`` is not
built in is validated by the plug-in's model, found on first use (``importlib.metadata``, once
per process), so a plan of built-in kinds never scans the installed packages. A built-in kind
cannot be replaced by a plug-in.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    WithJsonSchema,
)
from typing_extensions import TypeAliasType

from tminus.plan import (
    _step_base,
    _steps_basic,
    _steps_data,
    _steps_fleet,
    _steps_kube,
    _steps_traffic,
)
from tminus.plan._plugins import PluginModels
from tminus.plan._step_base import Retry, StepBase
from tminus.plan._steps_basic import (
    ApproveStep,
    HttpExpect,
    HttpStep,
    MaintenanceStep,
    NotifyStep,
    RunStep,
    SqlStep,
    WaitStep,
)
from tminus.plan._steps_data import (
    BackupFrom,
    BackupRef,
    BackupStep,
    MigrateStep,
    RestoreStep,
    SnapshotStep,
    VerifyBackupStep,
)
from tminus.plan._steps_fleet import (
    FLEET_HOOK_VARIABLES,
    FLEET_HOST_VARIABLES,
    BatchSpec,
    FleetOn,
    ReleaseStep,
    SshStep,
    UploadStep,
    batch_problem,
    batch_problem_or_raise,
    batch_sizes,
    max_fail_problem,
    tolerated_failures,
)
from tminus.plan._steps_kube import KubernetesStep
from tminus.plan._steps_traffic import (
    BlueGreenStep,
    CanaryStep,
    CanaryStepWeight,
    FlagStep,
    TrafficStep,
)

__all__ = [
    "BUILTIN_STEP_MODELS",
    "FLEET_HOOK_VARIABLES",
    "FLEET_HOST_VARIABLES",
    "MODEL_GROUP",
    "PLUGINS",
    "PLUGIN_TAG",
    "STEP_KINDS",
    "ApproveStep",
    "BackupFrom",
    "BackupRef",
    "BackupStep",
    "BatchSpec",
    "BlueGreenStep",
    "CanaryStep",
    "CanaryStepWeight",
    "FlagStep",
    "FleetOn",
    "HttpExpect",
    "HttpStep",
    "KubernetesStep",
    "MaintenanceStep",
    "MigrateStep",
    "NotifyStep",
    "ReleaseStep",
    "RestoreStep",
    "Retry",
    "RunStep",
    "SnapshotStep",
    "SqlStep",
    "SshStep",
    "Step",
    "StepBase",
    "TrafficStep",
    "UploadStep",
    "VerifyBackupStep",
    "WaitStep",
    "batch_problem",
    "batch_problem_or_raise",
    "batch_sizes",
    "max_fail_problem",
    "step_model",
    "tolerated_failures",
]

#: kind → its model, for every kind tminus implements itself.
BUILTIN_STEP_MODELS: dict[str, type[StepBase]] = {
    "run": RunStep,
    "ssh": SshStep,
    "http": HttpStep,
    "sql": SqlStep,
    "wait": WaitStep,
    "approve": ApproveStep,
    "maintenance": MaintenanceStep,
    "backup": BackupStep,
    "restore": RestoreStep,
    "verify_backup": VerifyBackupStep,
    "migrate": MigrateStep,
    "snapshot": SnapshotStep,
    "upload": UploadStep,
    "release": ReleaseStep,
    "traffic": TrafficStep,
    "flag": FlagStep,
    "canary": CanaryStep,
    "blue_green": BlueGreenStep,
    "notify": NotifyStep,
    "kubernetes": KubernetesStep,
}
STEP_KINDS: tuple[str, ...] = tuple(BUILTIN_STEP_MODELS)

#: The entry-point group of third-party step models (name: the kind; value: ``module:Model``).
MODEL_GROUP = "tminus.step_models"
#: The union's tag of a plug-in kind (never written in a plan).
PLUGIN_TAG = "plug-in kind"

PLUGINS = PluginModels(
    group=MODEL_GROUP,
    field="kind",
    base=StepBase,
    builtins=BUILTIN_STEP_MODELS,
    tag=PLUGIN_TAG,
    namespace=lambda: {"Step": Step},  # a plug-in model's inherited undo: list[Step]
)


def step_model(kind: str) -> type[StepBase] | None:
    """The model of ``kind``: built in, else an installed plug-in's, else None."""
    model = PLUGINS.model(kind)
    return model if model is None or issubclass(model, StepBase) else None


_PLUGIN = Annotated[
    StepBase,
    PlainValidator(PLUGINS.validate),
    WithJsonSchema(PLUGINS.json_schema("step kind")),
    Tag(PLUGIN_TAG),
]

# A named alias (``TypeAliasType``): pydantic builds its validator once and refers to it from
# every field that uses it, instead of once per field (#14: ``tminus check`` start-up).
Step = TypeAliasType(
    "Step",
    Annotated[
        Annotated[RunStep, Tag("run")]
        | Annotated[SshStep, Tag("ssh")]
        | Annotated[HttpStep, Tag("http")]
        | Annotated[SqlStep, Tag("sql")]
        | Annotated[WaitStep, Tag("wait")]
        | Annotated[ApproveStep, Tag("approve")]
        | Annotated[MaintenanceStep, Tag("maintenance")]
        | Annotated[BackupStep, Tag("backup")]
        | Annotated[RestoreStep, Tag("restore")]
        | Annotated[VerifyBackupStep, Tag("verify_backup")]
        | Annotated[MigrateStep, Tag("migrate")]
        | Annotated[SnapshotStep, Tag("snapshot")]
        | Annotated[UploadStep, Tag("upload")]
        | Annotated[ReleaseStep, Tag("release")]
        | Annotated[TrafficStep, Tag("traffic")]
        | Annotated[FlagStep, Tag("flag")]
        | Annotated[CanaryStep, Tag("canary")]
        | Annotated[BlueGreenStep, Tag("blue_green")]
        | Annotated[NotifyStep, Tag("notify")]
        | Annotated[KubernetesStep, Tag("kubernetes")]
        | _PLUGIN,
        Field(discriminator=Discriminator(PLUGINS.tag)),
    ],
)

# The models are built on first use (``defer_build``), each resolving ``Step`` in the module
# that defines it (the inherited ``undo: list[Step]`` too): hand the union to those modules.
for _module in (_step_base, _steps_basic, _steps_data, _steps_fleet, _steps_traffic, _steps_kube):
    _module.Step = Step  # type: ignore[attr-defined]
