"""``kind: redis``: one Redis hash per flag, at ``<prefix><flag>``.

Fields (all strings, as Redis stores them):

- ``percentage``: the share of user keys that get "on" while enabled, e.g. ``25`` or ``2.5``;
- ``enabled``: ``1`` or ``0``;
- ``hash_version``: the bucketing algorithm the percentage is meant for
  (:data:`tminus.flags.bucketing.HASH_VERSION`); an application evaluates a key as
  ``enabled == "1" and bucket(flag, key) < float(percentage)``;
- ``updated_at``: when tminus last wrote it (UTC, ISO 8601).

A change is one ``MULTI``/``EXEC`` transaction. tminus refuses to change a flag written with
another ``hash_version`` (its keys would be re-shuffled). Each operation opens and closes its
own connection; the URL (which may carry a password) never appears in messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

from tminus.flags.base import (
    BaseFlagStore,
    FlagState,
    FlagStore,
    FlagStoreError,
    check_percentage,
)
from tminus.flags.bucketing import HASH_VERSION
from tminus.plan.interpolate import Resolver, mask_url_passwords
from tminus.plan.targets import RedisFlagStore

__all__ = ["KIND", "RedisFlags", "RedisKind"]


def _fmt(pct: float) -> str:
    return f"{pct:g}" if pct == int(pct) else f"{pct:.3f}".rstrip("0")


class RedisFlags(BaseFlagStore):
    """Flags in Redis hashes."""

    def __init__(self, name: str, url: str, prefix: str, mask: Any = None) -> None:
        self.name = name
        self.url = url
        self.prefix = prefix
        self._mask = mask or (lambda s: s)

    def describe(self) -> str:
        return f"redis {mask_url_passwords(self.url)} (keys {self.prefix}*)"

    def key(self, flag: str) -> str:
        return self.prefix + flag

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        from redis import asyncio as aioredis
        from redis.exceptions import RedisError

        try:
            client = aioredis.from_url(
                self.url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10
            )
        except (ValueError, RedisError) as exc:
            raise FlagStoreError(
                f"bad Redis URL for flag store '{self.name}': "
                + mask_url_passwords(self._mask(str(exc)))
            ) from None
        try:
            yield client
        except RedisError as exc:
            msg = mask_url_passwords(self._mask(str(exc)))
            raise FlagStoreError(
                f"Redis flag store '{self.name}' ({mask_url_passwords(self.url)}): {msg}"
            ) from None
        finally:
            await client.aclose()

    def _state(self, flag: str, fields: dict[str, str]) -> FlagState:
        try:
            return FlagState(
                enabled=fields.get("enabled", "1") == "1",
                percentage=float(fields.get("percentage", "100")),
                hash_version=int(fields.get("hash_version", str(HASH_VERSION))),
            )
        except ValueError:
            raise FlagStoreError(
                f"Redis key {self.key(flag)} does not hold a tminus flag: {sorted(fields)}"
            ) from None

    async def get(self, flag: str) -> FlagState | None:
        async with self._client() as r:
            fields: dict[str, str] = await r.hgetall(self.key(flag))
        return self._state(flag, fields) if fields else None

    async def update(
        self, flag: str, *, percentage: float | None = None, enabled: bool | None = None
    ) -> FlagState:
        pct = None if percentage is None else check_percentage(percentage)
        key = self.key(flag)
        async with self._client() as r:
            current: dict[str, str] = await r.hgetall(key)
            if current:
                state = self._state(flag, current)
                if state.hash_version != HASH_VERSION:
                    raise FlagStoreError(
                        f"flag '{flag}' in Redis was written for hash version "
                        f"{state.hash_version}; this tminus buckets with version {HASH_VERSION}",
                        hint="changing it would move users between buckets; migrate it first",
                    )
            new: dict[str, str] = {
                "hash_version": str(HASH_VERSION),
                "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            if pct is not None:
                new["percentage"] = _fmt(pct)
            if enabled is not None:
                new["enabled"] = "1" if enabled else "0"
            async with r.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "percentage", "100")
                pipe.hsetnx(key, "enabled", "1")
                pipe.hset(key, mapping=new)
                pipe.hgetall(key)
                results = await pipe.execute()
        return self._state(flag, results[-1])

    async def snapshot(self, flag: str) -> Any:
        async with self._client() as r:
            fields: dict[str, str] = await r.hgetall(self.key(flag))
        return fields or None

    async def restore(self, flag: str, snapshot: Any) -> None:
        key = self.key(flag)
        async with self._client() as r, r.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if snapshot:
                pipe.hset(key, mapping={str(k): str(v) for k, v in dict(snapshot).items()})
            await pipe.execute()


class RedisKind:
    kind: ClassVar[str] = "redis"

    def open(self, name: str, config: RedisFlagStore, resolver: Resolver) -> RedisFlags:
        return RedisFlags(
            name, resolver.resolve(config.url), resolver.resolve(config.prefix), resolver.mask
        )


KIND = RedisKind()


def _conforms(impl: RedisFlags) -> FlagStore:  # mypy checks RedisFlags against the Protocol
    return impl
