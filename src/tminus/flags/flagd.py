"""``kind: flagd``: a flagd-compatible JSON flag file (OpenFeature ``fractional`` targeting).

A flag tminus manages has the boolean variants ``on``/``off``; its percentage is a
``fractional`` rule, which flagd (and every OpenFeature flagd provider evaluating in process)
evaluates with the sticky bucketing of :mod:`tminus.flags.bucketing`::

    "new-checkout": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "off",
      "targeting": {"fractional": [
        {"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]},
        ["on", 25], ["off", 75]
      ]}
    }

- ``enabled`` is the flag's ``state`` (``ENABLED``/``DISABLED``; flagd answers a disabled flag
  with the application's code default);
- a whole percentage ``p`` is written ``["on", p], ["off", 100 - p]``; a fractional one keeps
  three decimals (``["on", 2500], ["off", 97500]`` for 2.5%), flagd's weights being integers;
- an existing rule keeps its bucketing expression and the order of its two buckets (either
  order is sticky); a flag without targeting is at 100% when its ``defaultVariant`` is ``on``,
  else 0%; any other targeting is not tminus's to change, and is refused with an error;
- the file is replaced atomically (temp file + rename in the same directory), every other
  flag and top-level key (``$schema``, ``$evaluators``, ``metadata``) kept as it was (the JSON
  is re-serialised with two-space indents).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fcntl
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from tminus.flags.base import (
    BaseFlagStore,
    FlagState,
    FlagStore,
    FlagStoreError,
    check_percentage,
)
from tminus.flags.bucketing import percentage_weights
from tminus.plan.interpolate import Resolver
from tminus.plan.targets import FlagdStore

__all__ = ["DEFAULT_BUCKETING", "KIND", "FlagdFile", "FlagdKind"]

#: flagd's own default: the flag key followed by the evaluation context's targetingKey.
DEFAULT_BUCKETING: dict[str, Any] = {"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}
SCHEMA = "https://flagd.dev/schema/v0/flags.json"

_locks: dict[str, asyncio.Lock] = {}


def _buckets(args: list[Any]) -> tuple[Any, list[list[Any]]]:
    """A ``fractional`` argument list split into its bucketing expression (or None) and its
    ``[variant, weight]`` buckets."""
    if args and not isinstance(args[0], list):
        return args[0], list(args[1:])
    return None, list(args)


def parse_flag(name: str, obj: Any) -> FlagState:
    """The :class:`FlagState` of one flag object, if tminus can manage it."""
    if not isinstance(obj, dict):
        raise FlagStoreError(f"flag '{name}' is not a JSON object")
    variants = obj.get("variants")
    if not isinstance(variants, dict) or "on" not in variants or "off" not in variants:
        raise FlagStoreError(
            f"flag '{name}' has no 'on' and 'off' variants",
            hint='tminus manages flags with "variants": {"on": true, "off": false}',
        )
    enabled = obj.get("state", "ENABLED") == "ENABLED"
    targeting = obj.get("targeting")
    if not targeting:
        return FlagState(enabled, 100.0 if obj.get("defaultVariant") == "on" else 0.0)
    if not isinstance(targeting, dict) or list(targeting) != ["fractional"]:
        raise FlagStoreError(
            f"flag '{name}' has targeting rules tminus does not manage",
            hint="tminus changes flags whose targeting is one 'fractional' rule over on/off",
        )
    args = targeting["fractional"]
    _expr, buckets = _buckets(args if isinstance(args, list) else [])
    weights: dict[str, int] = {}
    for b in buckets:
        if not isinstance(b, list) or not b or b[0] not in ("on", "off") or b[0] in weights:
            raise FlagStoreError(
                f"flag '{name}': its fractional rule is not one 'on' and one 'off' bucket"
            )
        w = b[1] if len(b) > 1 else 1  # flagd: a bucket without a weight weighs 1
        if not isinstance(w, int | float) or isinstance(w, bool) or w < 0:
            raise FlagStoreError(f"flag '{name}': bucket weight {w!r} is not a number >= 0")
        weights[b[0]] = int(w)
    total = sum(weights.values())
    pct = weights.get("on", 0) * 100 / total if total else 0.0
    return FlagState(enabled, round(pct, 3))


def apply_percentage(obj: dict[str, Any], percentage: float) -> None:
    """Write ``percentage`` into a flag object as its fractional rule (see the module doc)."""
    on, total = percentage_weights(percentage)
    weight = {"on": on, "off": total - on}
    targeting = obj.get("targeting")
    if targeting and isinstance(targeting, dict) and "fractional" in targeting:
        expr, buckets = _buckets(list(targeting["fractional"]))
        order = [b[0] for b in buckets if isinstance(b, list) and b]
        order += [v for v in ("on", "off") if v not in order]
    else:
        expr, order = copy.deepcopy(DEFAULT_BUCKETING), ["on", "off"]
        obj["defaultVariant"] = "off"
    new_buckets: list[Any] = [[v, weight[v]] for v in order]
    obj["targeting"] = {"fractional": ([expr] if expr is not None else []) + new_buckets}


class FlagdFile(BaseFlagStore):
    """A flagd flag definition file."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path

    def describe(self) -> str:
        return f"flagd file {self.path}"

    # --- FlagStore ------------------------------------------------------------------------
    async def get(self, flag: str) -> FlagState | None:
        obj = self._load()["flags"].get(flag)
        return None if obj is None else parse_flag(flag, obj)

    async def update(
        self, flag: str, *, percentage: float | None = None, enabled: bool | None = None
    ) -> FlagState:
        pct = None if percentage is None else check_percentage(percentage)
        async with self._locked():
            doc = self._load()
            flags: dict[str, Any] = doc["flags"]
            obj = flags.get(flag)
            if obj is None:
                obj = {
                    "state": "ENABLED",
                    "variants": {"on": True, "off": False},
                    "defaultVariant": "on",
                }
            else:
                parse_flag(flag, obj)  # refuse flags tminus does not manage
                obj = copy.deepcopy(obj)
            if enabled is not None:
                obj["state"] = "ENABLED" if enabled else "DISABLED"
            if pct is not None:
                apply_percentage(obj, pct)
            flags[flag] = obj
            self._save(doc)
            return parse_flag(flag, obj)

    async def snapshot(self, flag: str) -> Any:
        return copy.deepcopy(self._load()["flags"].get(flag))

    async def restore(self, flag: str, snapshot: Any) -> None:
        async with self._locked():
            doc = self._load()
            if snapshot is None:
                if flag not in doc["flags"]:
                    return
                del doc["flags"][flag]
            else:
                doc["flags"][flag] = copy.deepcopy(snapshot)
            self._save(doc)

    # --- the file -------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {"$schema": SCHEMA, "flags": {}}
        except OSError as exc:
            raise FlagStoreError(f"cannot read the flag file {self.path}: {exc}") from None
        try:
            doc = json.loads(text) if text.strip() else {"$schema": SCHEMA, "flags": {}}
        except json.JSONDecodeError as exc:
            raise FlagStoreError(
                f"the flag file {self.path} is not valid JSON: {exc}",
                hint="tminus never writes a file it cannot read back; fix it by hand",
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.setdefault("flags", {}), dict):
            raise FlagStoreError(f"the flag file {self.path} has no 'flags' object")
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        tmp = self.path.parent / f".{self.path.name}.tminus-tmp"
        try:
            with open(tmp, "w") as fh:
                json.dump(doc, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, self.path.stat().st_mode & 0o7777)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise FlagStoreError(f"cannot write the flag file {self.path}: {exc}") from None

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        lock = _locks.setdefault(str(self.path.resolve()), asyncio.Lock())
        async with lock:
            lock_path = self.path.parent / f".{self.path.name}.tminus-lock"
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise FlagStoreError(f"cannot lock the flag file {self.path}: {exc}") from None
            try:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)


class FlagdKind:
    kind: ClassVar[str] = "flagd"

    def open(self, name: str, config: FlagdStore, resolver: Resolver) -> FlagdFile:
        return FlagdFile(name, Path(resolver.resolve(config.path)))


KIND = FlagdKind()


def _conforms(impl: FlagdFile) -> FlagStore:  # mypy checks FlagdFile against the Protocol
    return impl
