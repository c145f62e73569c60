"""Targets: what a plan acts on. Hosts and groups, databases, paths, routers, flag stores,
metric sources and Kubernetes clusters, each declared once by name and referred to by that
name from steps and checks.
"""

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from tminus.plan._base import Name, PlanModel
from tminus.plan.values import DurationStr

from ._base import new_dict, new_list

__all__ = [
    "DATABASE_KINDS",
    "CookieRoute",
    "Database",
    "FlagStore",
    "FlagdStore",
    "FlagsRouter",
    "Group",
    "HaproxyRouter",
    "Host",
    "KubernetesTarget",
    "MetricSource",
    "NginxRouter",
    "PathTarget",
    "PrometheusSource",
    "RedisFlagStore",
    "Router",
    "SshDefaults",
    "Targets",
    "cookie_parts",
]


class Host(PlanModel):
    """A machine reached over SSH, or the local machine (``local: true``)."""

    address: str | None = Field(None, description="Host name or IP; defaults to the key.")
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    local: bool = False
    become: bool | str = False
    vars: dict[str, Any] = Field(default_factory=new_dict)


class Group(PlanModel):
    """A named set of hosts; ``children`` names other groups whose hosts it includes."""

    hosts: list[Name] = Field(default_factory=new_list)
    children: list[Name] = Field(default_factory=new_list)
    vars: dict[str, Any] = Field(default_factory=new_dict)


def _group_from_list(value: Any) -> Any:
    return {"hosts": value} if isinstance(value, list) else value


class _GroupInput(Group):
    @model_validator(mode="before")
    @classmethod
    def _list_shorthand(cls, value: Any) -> Any:
        return _group_from_list(value)


DATABASE_KINDS = ("postgres", "mysql", "mariadb", "sqlite")


class Database(PlanModel):
    """A database: ``kind`` and a URL (``postgresql://``, ``mysql://``, ``sqlite:///path``)."""

    kind: Literal["postgres", "mysql", "mariadb", "sqlite"]
    url: str
    description: str | None = None
    host: Name | None = Field(None, description="Host the dump tools run on; local by default.")
    tables: list[str] = Field(
        default_factory=new_list, description="Tables that must exist (seed 001: 9/9 tables)."
    )


class PathTarget(PlanModel):
    """A file tree (a directory or a file) on a host (local by default)."""

    path: str
    host: Name | None = None
    description: str | None = None


class CookieRoute(PlanModel):
    """A cookie route that matches one value of the cookie (``canary=1``, not ``canary=0``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="The cookie's name.")
    value: str = Field(
        pattern=r"^[A-Za-z0-9._~-]+$",
        description="The one value that routes to the pool; other values follow the weights.",
    )


def cookie_parts(cookie: str | CookieRoute | None) -> tuple[str, str | None] | None:
    """A router's ``cookie`` as (name, value); value None: any value. None: no cookie."""
    if cookie is None:
        return None
    if isinstance(cookie, CookieRoute):
        return cookie.name, cookie.value
    return cookie, None


class NginxRouter(PlanModel):
    """nginx: tminus owns one include file with the upstream weights and a cookie map."""

    kind: Literal["nginx"]
    include_file: str = Field(description="The file tminus writes; include it in your config.")
    config: str | None = Field(None, description="Main config file, for `nginx -t -c`.")
    prefix: str | None = Field(None, description="nginx path prefix (`nginx -p`).")
    nginx: str = Field("nginx", description="The nginx binary.")
    reload: str | None = Field(None, description="Reload command; default `nginx -s reload`.")
    pid_file: str | None = Field(
        None,
        description="nginx's pid file, to confirm a reload started new workers; default: the "
        "config's `pid` directive, else /run/nginx.pid.",
    )
    keepalive: int = Field(
        32,
        ge=0,
        le=10000,
        description="Idle keep-alive connections to the upstream servers kept by each nginx "
        "worker (`keepalive` in the upstream blocks tminus writes); 0: a new connection per "
        'request. Needs `proxy_http_version 1.1;` and `proxy_set_header Connection "";` '
        "where nginx proxies (docs/routers.md).",
    )
    upstream: str = Field(
        "backend",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Name of the upstream tminus writes.",
    )
    pools: dict[Name, list[str]] = Field(description="Pool name → list of server addresses.")
    cookie: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")] | CookieRoute | None = Field(
        None,
        description="Cookie that routes to the canary pool: a name (any non-empty value), or "
        "`{name, value}` (only that value).",
    )


class HaproxyRouter(PlanModel):
    """HAProxy: weights and states through the runtime API on the stats socket."""

    kind: Literal["haproxy"]
    socket: str = Field(description="Path of the stats socket (`stats socket ... level admin`).")
    backend: str
    config: str | None = Field(None, description="Config file kept in step with the changes.")
    haproxy: str = Field("haproxy", description="The HAProxy binary, for `haproxy -c`.")
    pools: dict[Name, list[str]] = Field(description="Pool name → list of server names.")
    cookie: str | CookieRoute | None = Field(
        None,
        description="Cookie that routes to the cookie backend: a name (any value), or "
        "`{name, value}` (only that value).",
    )
    cookie_map: str | None = Field(
        None,
        description="Map file (as named in the config) whose `route` entry names the backend "
        "for requests carrying the cookie; tminus sets it at runtime and on disk.",
    )
    cookie_backends: dict[Name, str] = Field(
        default_factory=new_dict,
        description="Pool name → backend holding only that pool's servers; default "
        "`<backend>_<pool>`.",
    )

    @model_validator(mode="after")
    def _cookie_needs_map(self) -> "HaproxyRouter":
        if self.cookie and not self.cookie_map:
            raise ValueError("a haproxy router with 'cookie' needs 'cookie_map'")
        return self


class FlagsRouter(PlanModel):
    """A feature flag percentage used as a traffic split: the `on` pool gets the flag's
    percentage of user keys (sticky), the `off` pool the rest."""

    kind: Literal["flags"]
    store: Name
    flag: str
    on_pool: Name = Field("canary", description="The pool that gets the flag's 'on' variant.")
    off_pool: Name = Field("stable", description="The pool that gets the 'off' variant.")

    @property
    def pools(self) -> dict[str, str]:
        """Pool → the flag variant it stands for (the plan checker reads the pool names)."""
        return {self.off_pool: "off", self.on_pool: "on"}


Router = Annotated[NginxRouter | HaproxyRouter | FlagsRouter, Field(discriminator="kind")]


class FlagdStore(PlanModel):
    """A flagd-compatible JSON flag file (OpenFeature fractional targeting)."""

    kind: Literal["flagd"]
    path: str


class RedisFlagStore(PlanModel):
    """Flags kept in Redis hashes."""

    kind: Literal["redis"]
    url: str
    prefix: str = "tminus:flags:"


FlagStore = Annotated[FlagdStore | RedisFlagStore, Field(discriminator="kind")]


class PrometheusSource(PlanModel):
    """A Prometheus server queried through its HTTP API."""

    kind: Literal["prometheus"]
    url: str
    headers: dict[str, str] = Field(default_factory=new_dict)


MetricSource = Annotated[PrometheusSource, Field(discriminator="kind")]


class KubernetesTarget(PlanModel):
    """A Kubernetes cluster and namespace, reached through a kubeconfig file (its context) or
    the pod's own service account (``in_cluster: true``); docs/kubernetes.md."""

    kubeconfig: str | None = Field(
        None, description="Path of the kubeconfig file (``${…}`` allowed); or in_cluster."
    )
    in_cluster: bool = Field(
        False, description="Use the service account of the pod tminus runs in."
    )
    context: str | None = Field(
        None, description="The kubeconfig context; default: its current-context."
    )
    namespace: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Namespace of the Deployments; default: the context's, else `default`.",
    )

    @model_validator(mode="after")
    def _one_way_in(self) -> "KubernetesTarget":
        if (self.kubeconfig is None) == (not self.in_cluster):
            raise ValueError("a kubernetes target needs 'kubeconfig' or 'in_cluster: true' (one)")
        if self.in_cluster and self.context is not None:
            raise ValueError("'context' names a kubeconfig context; in_cluster has none")
        return self


class SshDefaults(PlanModel):
    """Connection settings shared by every SSH host of the plan."""

    known_hosts: str | None = Field(None, description="Default known_hosts; ~/.ssh/known_hosts.")
    accept_new_host_keys: bool = Field(
        False, description="Record unknown host keys (like StrictHostKeyChecking=accept-new)."
    )
    connect_timeout: DurationStr = timedelta(seconds=10)
    keepalive_interval: DurationStr = timedelta(seconds=15)
    forks: int = Field(
        100, ge=1, le=1000, description="Hosts worked on at once within a batch (like --forks)."
    )


class Targets(PlanModel):
    """Everything a plan acts on, by name."""

    inventory: str | None = Field(None, description="An Ansible inventory (INI or YAML) file.")
    ssh: SshDefaults = Field(default_factory=SshDefaults)
    hosts: dict[Name, Host] = Field(default_factory=new_dict)
    groups: dict[Name, _GroupInput] = Field(default_factory=new_dict)
    databases: dict[Name, Database] = Field(default_factory=new_dict)
    paths: dict[Name, PathTarget] = Field(default_factory=new_dict)
    routers: dict[Name, Router] = Field(default_factory=new_dict)
    flag_stores: dict[Name, FlagStore] = Field(default_factory=new_dict)
    metrics: dict[Name, MetricSource] = Field(default_factory=new_dict)
    kubernetes: dict[Name, KubernetesTarget] = Field(default_factory=new_dict)

    def host_or_group_names(self) -> set[str]:
        return set(self.hosts) | set(self.groups) | {"localhost", "all"}
