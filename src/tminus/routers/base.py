"""The router plug-in interface: how traffic is split between named pools.

A router is configured in the plan's ``targets.routers`` (kind ``nginx``, ``haproxy`` or
``flags``). Steps (``traffic``, ``canary``, ``blue_green``) and the engine's automatic rollback
know routers only through this Protocol and :func:`open_router`; nothing else names a kind.

Weights are percentages per pool name (``{"stable": 95, "canary": 5}``) and always sum to 100.
A router applies a whole weight map in **one** call (the automatic rollback's "traffic back to
stable first, in one router call"), and is idempotent: setting the weights it already has is
a no-op that succeeds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from tminus.errors import PlanError, TminusError
from tminus.plan.interpolate import Resolver
from tminus.registry import Registry, Unknown

if TYPE_CHECKING:
    from tminus.plan.model import Plan

__all__ = [
    "BUILTIN_ROUTERS",
    "CookieRoutes",
    "Router",
    "RouterContext",
    "RouterError",
    "RouterKind",
    "check_weights",
    "open_router",
    "pool_problems",
    "router_for_step",
    "split_percent",
]


class RouterError(TminusError):
    """A router could not apply or read a change (config rejected, socket refused...)."""


@dataclass
class RouterContext:
    """What a router may use: values resolved and secrets masked, the deploy's state dir."""

    name: str
    resolver: Resolver
    state_dir: Path
    #: The step context's services (:class:`tminus.steps.base.Services`); {} outside a step.
    services: Any
    #: ``targets.flag_stores`` of the plan (a ``flags`` router opens its store from there).
    flag_stores: Mapping[str, Any] = field(default_factory=dict)


class CookieRoutes(Protocol):
    """The header/cookie route of a router: requests carrying its canary cookie go to a pool
    (a blue/green preview, a canary for testers) whatever the weights say."""

    async def set_cookie_route(self, pool: str | None) -> None:
        """Send requests that carry the router's canary cookie (or header) to ``pool``;
        ``None`` removes the route."""
        ...

    async def get_cookie_route(self) -> str | None:
        """The pool that requests carrying the canary cookie go to now, read back from the
        router (``None``: no cookie route, or the router has no cookie)."""
        ...


class Router(CookieRoutes, Protocol):
    """One configured router (a plan target), ready to use: Flagger's four verbs (set and read
    the split, verify, the pools) plus the :class:`CookieRoutes`."""

    name: str

    async def set_weights(
        self, weights: Mapping[str, int], *, urgent: bool = False
    ) -> float | None:
        """Apply the whole split at once (pool → percent, summing to 100). ``urgent``: the
        traffic goes back to safety (a failing canary's restore, a switch back): a router
        that checks what it persists (a config file) changes the traffic first and checks and
        persists after; one that cannot change traffic without its check ignores it.

        Returns when the traffic moved (``time.time()``) if that was before the return (an
        urgent change persisted after the move), else None: the return is the time."""
        ...

    async def get_weights(self) -> dict[str, int]:
        """The split in force now, read back from the router itself (not from tminus's memory)."""
        ...

    async def verify(self) -> list[str]:
        """Problems with the router's config or reachability; empty when it is usable."""
        ...

    def pools(self) -> list[str]:
        """The pool names this router knows."""
        ...


class RouterKind(Protocol):
    """A router module exposes ``KIND``: builds a :class:`Router` from its plan target."""

    kind: ClassVar[str]

    def open(self, config: Any, ctx: RouterContext) -> Router: ...


#: router kind → module (each module has ``KIND``).
BUILTIN_ROUTERS: dict[str, str] = {
    "nginx": "tminus.routers.nginx",
    "haproxy": "tminus.routers.haproxy",
    "flags": "tminus.routers.flags",
}
#: The router kinds (built in only: the plan's router targets are a closed union).
ROUTERS: Registry[RouterKind] = Registry("router kind", BUILTIN_ROUTERS)


def check_weights(weights: Mapping[str, int], pools: list[str]) -> dict[str, int]:
    """Validate a split against a router's pools; pools left out get 0."""
    unknown = sorted(set(weights) - set(pools))
    if unknown:
        raise RouterError(
            f"unknown pool(s) {', '.join(unknown)}", hint=f"pools: {', '.join(pools)}"
        )
    if any(w < 0 or w > 100 for w in weights.values()):
        raise RouterError("weights are percentages from 0 to 100")
    if sum(weights.values()) != 100:
        raise RouterError(f"weights must sum to 100, not {sum(weights.values())}")
    return {p: int(weights.get(p, 0)) for p in pools}


def pool_problems(pools: Mapping[str, list[str]], pattern: str, not_plain: str) -> list[str]:
    """Problems every router checks in its ``pools``: a pool without servers, a server in two
    pools, a server that does not match ``pattern`` (``not_plain`` is the message, formatted
    with the server's repr)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for pool, servers in pools.items():
        if not servers:
            problems.append(f"pool '{pool}' has no servers")
        for srv in servers:
            if srv in seen:
                problems.append(f"server {srv} is in pools '{seen[srv]}' and '{pool}'")
            seen[srv] = pool
            if not re.fullmatch(pattern, srv):
                problems.append(not_plain.format(repr(srv)))
    return problems


def open_router(name: str, ctx: RouterContext, config: Any) -> Router:
    """The router ``name`` built from its target ``config`` (a plan ``targets.routers`` model)."""
    kind = str(getattr(config, "kind", ""))
    try:
        impl = ROUTERS.get(kind)
    except Unknown as exc:
        raise PlanError(f"router kind '{kind}' is not implemented", hint=exc.hint) from None
    return impl.open(config, ctx)


def split_percent(amounts: Mapping[str, float]) -> dict[str, int]:
    """Whole percentages summing to 100 in proportion to ``amounts`` (largest remainder), or
    all 0 when every amount is 0. Routers use it to read a split back from server weights."""
    total = sum(amounts.values())
    if total <= 0:
        return {k: 0 for k in amounts}
    exact = {k: v * 100 / total for k, v in amounts.items()}
    out = {k: int(v) for k, v in exact.items()}
    short = 100 - sum(out.values())
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], k))[:short]:
        out[k] += 1
    return out


class _StepContextLike(Protocol):
    """What :func:`router_for_step` needs of a step's context (``tminus.steps.base``)."""

    @property
    def plan(self) -> Plan: ...
    @property
    def resolver(self) -> Resolver: ...
    @property
    def state_dir(self) -> Path: ...
    @property
    def services(self) -> _RouterCache: ...


class _RouterCache(Protocol):
    """The routers a step context opened, by name (``tminus.steps.base.Services``)."""

    @property
    def routers(self) -> dict[str, Router]: ...


def router_for_step(ctx: _StepContextLike, name: str) -> Router:
    """The plan's router ``name`` (``targets.routers``), opened once per step context and kept
    in ``ctx.services.routers`` so that a step calling it repeatedly talks to one router."""
    key = name
    cached = ctx.services.routers.get(key)
    if cached is not None:
        router: Router = cached
        return router
    targets = ctx.plan.targets
    config = targets.routers.get(name)
    if config is None:
        raise PlanError(
            f"no router '{name}' in targets.routers",
            hint="routers: " + (", ".join(sorted(targets.routers)) or "none"),
        )
    router = open_router(
        name,
        RouterContext(
            name=name,
            resolver=ctx.resolver,
            state_dir=ctx.state_dir,
            services=ctx.services,
            flag_stores=targets.flag_stores,
        ),
        config,
    )
    ctx.services.routers[key] = router
    return router
