"""``kind: flags``: a feature flag percentage used as a traffic split.

The router has two pools: ``on_pool`` (default ``canary``) gets the flag's "on" variant and
``off_pool`` (default ``stable``) the rest. ``{stable: 75, canary: 25}`` sets the flag to 25%
and switches it on, in one write to the flag store; users are bucketed by their key, sticky
(see :mod:`tminus.flags.bucketing`), so the users in the canary at 5% stay in it at 25%.
Reading back, a disabled or missing flag is ``{stable: 100, canary: 0}``.

There is no cookie route (a flag's targeting decides who gets what): ``set_cookie_route``
raises :class:`~tminus.routers.base.RouterError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from tminus.flags.base import FlagStore, FlagStoreError, open_flag_store
from tminus.plan.targets import FlagsRouter
from tminus.routers.base import Router, RouterContext, RouterError, check_weights

__all__ = ["KIND", "FlagRouter", "FlagsKind"]


class FlagRouter:
    """A flag in a flag store, seen as two pools."""

    def __init__(self, name: str, cfg: FlagsRouter, store: FlagStore, flag: str) -> None:
        self.name = name
        self.store = store
        self.flag = flag
        self.on_pool = cfg.on_pool
        self.off_pool = cfg.off_pool
        if self.on_pool == self.off_pool:
            raise RouterError(f"router '{name}': on_pool and off_pool are both '{self.on_pool}'")

    def pools(self) -> list[str]:
        return [self.off_pool, self.on_pool]

    async def set_weights(
        self, weights: Mapping[str, int], *, urgent: bool = False
    ) -> float | None:
        split = check_weights(weights, self.pools())  # one write, nothing to check first
        try:
            await self.store.update(self.flag, percentage=split[self.on_pool], enabled=True)
        except FlagStoreError as exc:
            raise RouterError(str(exc), hint=exc.hint) from None
        return None  # the write is the change: its return is the time

    async def get_weights(self) -> dict[str, int]:
        try:
            state = await self.store.get(self.flag)
        except FlagStoreError as exc:
            raise RouterError(str(exc), hint=exc.hint) from None
        on = round(state.percentage) if state is not None and state.enabled else 0
        return {self.off_pool: 100 - on, self.on_pool: on}

    async def snapshot(self) -> Any:
        """The flag exactly as stored (a ``traffic`` step's undo puts it back as it was)."""
        try:
            return await self.store.snapshot(self.flag)
        except FlagStoreError as exc:
            raise RouterError(str(exc), hint=exc.hint) from None

    async def restore(self, snapshot: Any) -> None:
        try:
            await self.store.restore(self.flag, snapshot)
        except FlagStoreError as exc:
            raise RouterError(str(exc), hint=exc.hint) from None

    async def get_cookie_route(self) -> str | None:
        return None  # a flag has no cookie route

    async def set_cookie_route(self, pool: str | None) -> None:
        raise RouterError(
            f"router '{self.name}' is a feature flag: it has no cookie route",
            hint="target users with the flag's own rules, or use an nginx or haproxy router",
        )

    async def verify(self) -> list[str]:
        try:
            await self.store.get(self.flag)
        except FlagStoreError as exc:
            return [str(exc)]
        return []


class FlagsKind:
    kind: ClassVar[str] = "flags"

    def open(self, config: FlagsRouter, ctx: RouterContext) -> FlagRouter:
        stores = ctx.flag_stores
        if config.store not in stores:
            raise RouterError(
                f"router '{ctx.name}': no flag store '{config.store}' in targets.flag_stores",
                hint="flag stores: " + (", ".join(sorted(stores)) or "none"),
            )
        store = open_flag_store(config.store, stores[config.store], ctx.resolver)
        return FlagRouter(ctx.name, config, store, ctx.resolver.resolve(config.flag))


KIND = FlagsKind()


def _conforms(impl: FlagRouter) -> Router:  # mypy checks FlagRouter against the Protocol
    return impl
