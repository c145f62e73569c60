"""Checks: one type used everywhere (checklist, verify, analysis, watch, success metrics).

A check is a *source* (where the value comes from) plus a *condition* (``expect``) with
optional ``warn`` and ``critical`` levels. Checks are declared inline or by name in the plan's
``checks:`` section and referred to as ``use: NAME`` (or just the name as a string).
"""

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    PlainValidator,
    StringConstraints,
    Tag,
    WithJsonSchema,
    model_validator,
)
from typing_extensions import TypeAliasType

from tminus.plan._base import Name, PlanModel
from tminus.plan._plugins import PluginModels
from tminus.plan.values import ConditionStr, DurationStr, VarDurationStr

from ._base import new_dict, new_list

__all__ = [
    "BUILTIN_CHECK_MODELS",
    "CHECK_MODEL_GROUP",
    "CHECK_SOURCES",
    "PLUGINS",
    "PLUGIN_SOURCE_TAG",
    "BackupCheck",
    "Check",
    "CheckBase",
    "CheckRef",
    "CheckUse",
    "CommandCheck",
    "DbHealthCheck",
    "FileCountCheck",
    "HaproxyCheck",
    "HttpCheck",
    "KubernetesCheck",
    "NoDataLossCheck",
    "ProbeCheck",
    "PrometheusCheck",
    "SqlCheck",
    "SqlParam",
    "SqlParams",
]


class CheckBase(PlanModel):
    """Fields every check has, whatever its source."""

    name: str | None = Field(None, description="Human name shown in reports.")
    description: str | None = None
    owner: Name | None = Field(None, description="Role that owns this check.")
    metric: str | None = Field(
        None, description="Which value of the measurement to judge (source-specific)."
    )
    expect: ConditionStr | None = Field(None, description="Passes when the value meets this.")
    warn: ConditionStr | None = Field(None, description="WARN (notify) when the value meets this.")
    critical: ConditionStr | None = Field(
        None, description="CRITICAL (fail, roll back) when the value meets this."
    )
    timeout: DurationStr | None = None
    # Analysis parameters (Argo Rollouts' meanings; see docs/analysis.md). `interval` may be
    # written with variables (`${every}`), resolved when the check runs.
    interval: VarDurationStr | None = None
    count: int | None = Field(None, ge=1)
    failure_limit: int | None = Field(None, ge=0)
    inconclusive_limit: int | None = Field(None, ge=0)
    consecutive_error_limit: int | None = Field(None, ge=0)


class CommandCheck(CheckBase):
    """Run a local command; the value is its stdout (a number when it parses as one)."""

    source: Literal["command"]
    command: str | list[str]
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=new_dict)


class HttpCheck(CheckBase):
    """Request a URL; judge its status, latency (seconds) or body."""

    source: Literal["http"]
    url: str
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=new_dict)
    body: str | None = None
    status: int | list[int] | None = Field(None, description="Expected status; default 2xx.")
    body_contains: str | None = None


class SqlParam(PlanModel):
    """A value for a ``:name`` placeholder in SQL, bound by the driver (never spliced)."""

    value: str | int | float | bool | date | datetime | None = None
    type: Literal["str", "int", "float", "decimal", "bool", "date", "timestamp", "null"] | None = (
        Field(None, description="Converted to this type after its ${…} are resolved.")
    )


#: ``params:`` of a sql step or check: name → value, or name → {value, type}.
SqlParams = dict[
    Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)],
    SqlParam | str | int | float | bool | date | datetime | None,
]


class SqlCheck(CheckBase):
    """Run a query on a database target; the value is the first column of the first row."""

    source: Literal["sql"]
    database: Name
    query: str
    params: SqlParams = Field(
        default_factory=new_dict, description="Values bound to the query's :name placeholders."
    )


#: ``db_health`` metrics (docs/checking.md, "Database health").
DbHealthMetric = Literal[
    "replication_lag",
    "replication_lag_bytes",
    "connections",
    "lock_waits",
    "longest_lock_wait",
    "oldest_transaction",
]


class DbHealthCheck(CheckBase):
    """A health metric of a PostgreSQL or MariaDB/MySQL database target: replication lag,
    connection use, lock waits or the oldest open transaction (docs/checking.md)."""

    source: Literal["db_health"]
    database: Name
    metric: DbHealthMetric = Field(
        description="replication_lag (s), replication_lag_bytes, connections (fraction of "
        "max_connections), lock_waits (sessions), longest_lock_wait (s), "
        "oldest_transaction (s)."
    )
    measured_on: Literal["primary", "replica"] | None = Field(
        None,
        description="Replication metrics: whether the database target is the primary "
        "(worst connected replica) or a replica (its own replay). Required for them.",
    )
    no_replica: Literal["inconclusive", "failed"] = Field(
        "inconclusive",
        description="Replication metrics: the result when no replica is connected (on a "
        "primary) or the server is not a replica; never 0 s of lag.",
    )


class KubernetesCheck(CheckBase):
    """A Deployment of a ``targets.kubernetes`` cluster: its ready replicas, whether its
    rollout is complete and available, or its pods' container restarts (docs/kubernetes.md)."""

    source: Literal["kubernetes"]
    target: Name = Field(description="A `targets.kubernetes` entry.")
    deployment: str = Field(description="The Deployment's name (``${…}`` allowed).")
    metric: Literal["ready_replicas", "available", "pod_restarts"] = Field(
        description="ready_replicas (status.readyReplicas), available (1 when the rollout is "
        "complete and the Available condition is True, else 0), pod_restarts (container "
        "restarts of the Deployment's pods)."
    )
    since: str | None = Field(
        None,
        description="pod_restarts only: `rollout` (the pods of the newest ReplicaSet), a "
        "duration (`30m`: restarts in the last 30 minutes) or an ISO 8601 time; ``${…}`` "
        "allowed. Default: every restart of the current pods.",
    )

    @model_validator(mode="after")
    def _since_for_restarts(self) -> "KubernetesCheck":
        if self.since is not None and self.metric != "pod_restarts":
            raise ValueError("'since' is for metric pod_restarts (it would have no effect)")
        return self


class FileCountCheck(CheckBase):
    """Count files under a path (a path target name or a filesystem path)."""

    source: Literal["file_count"]
    path: str
    pattern: str = "*"
    recursive: bool = True


class PrometheusCheck(CheckBase):
    """A PromQL query over the HTTP API; no data is inconclusive."""

    source: Literal["prometheus"]
    target: Name | None = Field(None, description="A metrics target of kind prometheus.")
    url: str | None = None
    query: str
    headers: dict[str, str] = Field(
        default_factory=new_dict, description="Added to (and overriding) the target's headers."
    )

    @model_validator(mode="after")
    def _target_or_url(self) -> "PrometheusCheck":
        if not self.target and not self.url:
            raise ValueError("a prometheus check needs 'target' (a metrics target) or 'url'")
        return self


class HaproxyCheck(CheckBase):
    """Backend or server statistics read from an HAProxy router's stats socket."""

    source: Literal["haproxy"]
    router: Name
    backend: str | None = Field(None, description="Default: the router's backend.")
    server: str | None = Field(None, description="A server of the backend; default: the backend.")


class ProbeCheck(CheckBase):
    """tminus's own HTTP prober: requests at a set rate, error rate and latency percentiles."""

    source: Literal["probe"]
    url: str
    rate: float = Field(
        20.0, gt=0, description="Requests per second to the canary (and as many to a baseline)."
    )
    concurrency: int = Field(8, ge=1, description="Requests in flight at most.")
    duration: DurationStr | None = Field(
        None, description="How long one measurement probes; default: the interval, else 5s."
    )
    headers: dict[str, str] = Field(default_factory=new_dict)
    cookie: str | None = Field(None, description="A cookie to reach the canary, e.g. canary=1.")
    baseline_url: str | None = Field(None, description="Default: url (with baseline_cookie).")
    baseline_cookie: str | None = None
    request_timeout: DurationStr | None = Field(
        None, description="One request's timeout (an error when it expires); default 5s."
    )
    sequential: bool = Field(
        True, description="Stop and fail as soon as the sequential test finds the canary worse."
    )
    alpha: float = Field(
        0.01, gt=0, lt=1, description="False-positive bound of the sequential tests together."
    )
    max_error_rate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Also test the canary's error rate against this; default 0.01 without "
        "a baseline, off with one.",
    )

    @model_validator(mode="after")
    def _timeout_covers_duration(self) -> "ProbeCheck":
        length = self.duration or self.interval
        if self.timeout is not None and length is not None and self.timeout <= length:
            raise ValueError(
                "a probe measures for its duration (default: its interval): "
                "its 'timeout' must be longer"
            )
        return self


class NoDataLossCheck(CheckBase):
    """Compare the live state with a snapshot artifact: objects exist, no rows or files lost."""

    source: Literal["no_data_loss"]
    snapshot: Name = Field(description="The id of a snapshot step earlier in the plan.")
    allow_row_loss: list[str] = Field(default_factory=new_list)
    allow_missing: list[str] = Field(default_factory=new_list)


class BackupCheck(CheckBase):
    """Verify a backup artifact by restoring it into a scratch copy and comparing."""

    source: Literal["verify_backup"]
    backup: Name = Field(description="The id of a backup step earlier in the plan.")


class CheckUse(PlanModel):
    """A reference to a named check, optionally overriding its levels."""

    use: Name
    name: str | None = None
    expect: ConditionStr | None = None
    warn: ConditionStr | None = None
    critical: ConditionStr | None = None


#: source → its model, for every check source tminus implements itself.
BUILTIN_CHECK_MODELS: dict[str, type[CheckBase]] = {
    "command": CommandCheck,
    "http": HttpCheck,
    "sql": SqlCheck,
    "file_count": FileCountCheck,
    "prometheus": PrometheusCheck,
    "haproxy": HaproxyCheck,
    "probe": ProbeCheck,
    "no_data_loss": NoDataLossCheck,
    "verify_backup": BackupCheck,
    "db_health": DbHealthCheck,
    "kubernetes": KubernetesCheck,
}
CHECK_SOURCES: tuple[str, ...] = tuple(BUILTIN_CHECK_MODELS)

#: The entry-point group of third-party check models (name: the source; value: ``module:Model``);
#: their implementations are in the group ``tminus.sources`` (docs/plugins.md).
CHECK_MODEL_GROUP = "tminus.check_models"
#: The check union's tag of a plug-in source (never written in a plan).
PLUGIN_SOURCE_TAG = "plug-in source"

PLUGINS = PluginModels(
    group=CHECK_MODEL_GROUP,
    field="source",
    base=CheckBase,
    builtins=BUILTIN_CHECK_MODELS,
    tag=PLUGIN_SOURCE_TAG,
)

_PLUGIN = Annotated[
    CheckBase,
    PlainValidator(PLUGINS.validate),
    WithJsonSchema(PLUGINS.json_schema("check source")),
    Tag(PLUGIN_SOURCE_TAG),
]

Check = Annotated[
    Annotated[CommandCheck, Tag("command")]
    | Annotated[HttpCheck, Tag("http")]
    | Annotated[SqlCheck, Tag("sql")]
    | Annotated[FileCountCheck, Tag("file_count")]
    | Annotated[PrometheusCheck, Tag("prometheus")]
    | Annotated[HaproxyCheck, Tag("haproxy")]
    | Annotated[ProbeCheck, Tag("probe")]
    | Annotated[NoDataLossCheck, Tag("no_data_loss")]
    | Annotated[BackupCheck, Tag("verify_backup")]
    | Annotated[DbHealthCheck, Tag("db_health")]
    | Annotated[KubernetesCheck, Tag("kubernetes")]
    | _PLUGIN,
    Field(discriminator=Discriminator(PLUGINS.tag)),
]


def _check_ref_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "use"
    if isinstance(value, dict):
        if "use" in value:
            return "use"
        return "check"
    if isinstance(value, CheckUse):
        return "use"
    if isinstance(value, CheckBase):
        return "check"
    return None


def _str_to_use(value: Any) -> Any:
    return {"use": value} if isinstance(value, str) else value


class _CheckUseFromStr(CheckUse):
    @model_validator(mode="before")
    @classmethod
    def _from_str(cls, value: Any) -> Any:
        return _str_to_use(value)


#: Where a check is expected: a name (``tables_present``), ``{use: NAME, ...}`` or inline.
# A named alias (``TypeAliasType``): pydantic builds its validator once and refers to it from
# every field that uses it, instead of once per field (#14: ``tminus check`` start-up).
CheckRef = TypeAliasType(
    "CheckRef",
    Annotated[
        Annotated[_CheckUseFromStr, Tag("use")] | Annotated[Check, Tag("check")],
        Discriminator(
            _check_ref_tag,
            custom_error_type="check_ref",
            custom_error_message="expected a check: a name, {use: NAME} or a mapping with 'source'",
        ),
    ],
)
