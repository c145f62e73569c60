"""The flag store plug-in interface: where feature flags live (``targets.flag_stores``).

A flag, as tminus sees it, is a master switch (``enabled``) and a ``percentage`` of user keys
that get its "on" variant while it is enabled. Which keys those are is decided by the
versioned, sticky bucketing of :mod:`tminus.flags.bucketing` (flagd's ``fractional``), so
raising the percentage never takes the feature away from a user who already had it.

Stores (kind ``flagd``: a flagd-compatible JSON file; kind ``redis``: one hash per flag) are
known to steps and to the ``flags`` router only through :class:`FlagStore` and
:func:`open_flag_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from tminus.errors import PlanError, TminusError
from tminus.flags.bucketing import HASH_VERSION, bucket
from tminus.plan.interpolate import Resolver
from tminus.registry import Registry, Unknown

if TYPE_CHECKING:
    from tminus.plan.model import Plan

__all__ = [
    "BUILTIN_STORES",
    "BaseFlagStore",
    "FlagConveniences",
    "FlagState",
    "FlagStore",
    "FlagStoreError",
    "FlagStoreKind",
    "flag_store_for_step",
    "open_flag_store",
]


class FlagStoreError(TminusError):
    """A flag store could not be read or written, or holds a flag tminus does not manage."""


@dataclass(frozen=True)
class FlagState:
    """A flag as tminus manages it."""

    enabled: bool
    percentage: float
    hash_version: int = HASH_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "percentage": self.percentage,
            "hash_version": self.hash_version,
        }


class FlagConveniences(Protocol):
    """Shorthands every store has over ``get``/``update`` (:class:`BaseFlagStore` gives them),
    and the bucketing it shares with flagd."""

    async def set_percentage(self, flag: str, percentage: float) -> None: ...

    async def get_percentage(self, flag: str) -> float:
        """The percentage of keys that get "on" while enabled (0 for a missing flag)."""
        ...

    async def set_enabled(self, flag: str, on: bool) -> None: ...

    def bucket(self, flag: str, key: str) -> float:
        """The key's bucket in ``[0, 100)`` (see :mod:`tminus.flags.bucketing`)."""
        ...


class FlagStore(FlagConveniences, Protocol):
    """One configured flag store (a plan target), ready to use: read, write in one call,
    snapshot and restore exactly, say where it is; plus the :class:`FlagConveniences`."""

    name: str

    async def get(self, flag: str) -> FlagState | None:
        """The flag now, or ``None`` when the store has no such flag."""
        ...

    async def update(
        self, flag: str, *, percentage: float | None = None, enabled: bool | None = None
    ) -> FlagState:
        """Change the percentage and/or the switch in one write (a missing flag is created:
        enabled, at 100% unless a percentage is given). Returns the flag as written."""
        ...

    async def snapshot(self, flag: str) -> Any:
        """The flag exactly as stored (JSON-able; ``None`` when missing), for :meth:`restore`."""
        ...

    async def restore(self, flag: str, snapshot: Any) -> None:
        """Put back a :meth:`snapshot` (``None`` removes the flag)."""
        ...

    def describe(self) -> str:
        """Where the store is, for logs (no secrets)."""
        ...


class BaseFlagStore:
    """The conveniences of :class:`FlagStore` over ``get``/``update``."""

    name: str = ""

    async def get(self, flag: str) -> FlagState | None:
        raise NotImplementedError

    async def update(
        self, flag: str, *, percentage: float | None = None, enabled: bool | None = None
    ) -> FlagState:
        raise NotImplementedError

    async def set_percentage(self, flag: str, percentage: float) -> None:
        await self.update(flag, percentage=percentage)

    async def get_percentage(self, flag: str) -> float:
        state = await self.get(flag)
        return state.percentage if state is not None else 0.0

    async def set_enabled(self, flag: str, on: bool) -> None:
        await self.update(flag, enabled=on)

    def bucket(self, flag: str, key: str) -> float:
        return bucket(flag, key)


def check_percentage(percentage: float) -> float:
    if not 0 <= percentage <= 100:
        raise FlagStoreError(f"a percentage is between 0 and 100, not {percentage:g}")
    return round(float(percentage), 3)


class FlagStoreKind(Protocol):
    kind: ClassVar[str]

    def open(self, name: str, config: Any, resolver: Resolver) -> FlagStore: ...


#: flag store kind → module (each module has ``KIND``).
BUILTIN_STORES: dict[str, str] = {
    "flagd": "tminus.flags.flagd",
    "redis": "tminus.flags.redis",
}
#: The flag store kinds (built in only: the plan's flag store targets are a closed union).
FLAG_STORES: Registry[FlagStoreKind] = Registry("flag store kind", BUILTIN_STORES)


def open_flag_store(name: str, config: Any, resolver: Resolver) -> FlagStore:
    """The flag store ``name`` built from its target ``config`` (``targets.flag_stores``)."""
    kind = str(getattr(config, "kind", ""))
    try:
        impl = FLAG_STORES.get(kind)
    except Unknown as exc:
        raise PlanError(f"flag store kind '{kind}' is not implemented", hint=exc.hint) from None
    return impl.open(name, config, resolver)


class _StepContextLike(Protocol):
    @property
    def plan(self) -> Plan: ...
    @property
    def resolver(self) -> Resolver: ...
    @property
    def services(self) -> _FlagStoreCache: ...


class _FlagStoreCache(Protocol):
    """The flag stores a step context opened, by name (``tminus.steps.base.Services``)."""

    @property
    def flag_stores(self) -> dict[str, FlagStore]: ...


def flag_store_for_step(ctx: _StepContextLike, name: str) -> FlagStore:
    """The plan's flag store ``name``, opened once per step context (kept in
    ``ctx.services.flag_stores``)."""
    key = name
    cached = ctx.services.flag_stores.get(key)
    if cached is not None:
        store: FlagStore = cached
        return store
    stores = ctx.plan.targets.flag_stores
    if name not in stores:
        raise PlanError(
            f"no flag store '{name}' in targets.flag_stores",
            hint="flag stores: " + (", ".join(sorted(stores)) or "none"),
        )
    store = open_flag_store(name, stores[name], ctx.resolver)
    ctx.services.flag_stores[key] = store
    return store
