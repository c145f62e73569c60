"""Sticky percentage bucketing, the same as flagd's ``fractional`` operation.

A user key is "in" a flag's rollout when its bucket is below the flag's percentage. The bucket
is a pure function of the flag key and the user key, so every process (tminus, flagd, an
OpenFeature SDK evaluating in process, your own code reading Redis) puts the same key in the
same bucket, and raising the percentage only ever adds keys (5% → 25% → 100% never moves a
user back out).

**Hash version 1** (:data:`HASH_VERSION`), identical to flagd's current ``fractional``
operation (the flagd-testbed calls it ``@fractional-v2``, "high-precision integer bucketing"):

1. ``value = flagKey + targetingKey`` (string concatenation, what flagd's
   ``{"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}`` yields), UTF-8 encoded;
2. ``h = MurmurHash3_x86_32(value, seed=0)`` as an unsigned 32-bit integer;
3. for integer weights ``w_0 … w_n`` (total ``T``): ``bucket = (h * T) >> 32``, and the
   variant is the first whose running sum of weights exceeds ``bucket``.

tminus writes a percentage ``p`` as the weights ``["on", W], ["off", T - W]`` with ``T = 100``
(whole percentages) or ``T = 100000`` (three decimals), so a key is on exactly when
``h * T < W * 2**32``, i.e. when ``h / 2**32 * 100 < p``: :func:`bucket` is that number, in
``[0, 100)``.

Older flagd releases used float bucketing (``abs(int32(h)) / (2**31 - 1) * 100``, the
testbed's ``@fractional-v1``); they put different keys in the rollout (still sticky, still the
right share). A change of algorithm here gets a new :data:`HASH_VERSION`, recorded next to
every percentage tminus writes to Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

__all__ = [
    "HASH_VERSION",
    "bucket",
    "fractional_index",
    "in_rollout",
    "murmur3_32",
    "percentage_weights",
]

#: The version of the bucketing algorithm described above.
HASH_VERSION = 1

_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_MASK = 0xFFFFFFFF

#: Percentages are kept to three decimals (flagd's weights are integers).
_FINE_TOTAL = 100_000


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit (Austin Appleby's reference ``MurmurHash3_x86_32``), unsigned."""
    h = seed & _MASK
    n = len(data)
    tail_at = n - n % 4
    for i in range(0, tail_at, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _C1) & _MASK
        k = _rotl(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
        h = _rotl(h, 13)
        h = (h * 5 + 0xE6546B64) & _MASK
    k = 0
    rest = n & 3
    if rest == 3:
        k ^= data[tail_at + 2] << 16
    if rest >= 2:
        k ^= data[tail_at + 1] << 8
    if rest >= 1:
        k ^= data[tail_at]
        k = (k * _C1) & _MASK
        k = _rotl(k, 15)
        k = (k * _C2) & _MASK
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


def fractional_index(value: str, weights: Sequence[int]) -> int:
    """Which of ``weights`` flagd's ``fractional`` picks for the bucketing ``value`` (-1 when
    every weight is 0, where flagd returns no variant)."""
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    total = sum(weights)
    if total == 0:
        return -1
    slot = (murmur3_32(value.encode("utf-8")) * total) >> 32
    end = 0
    for i, w in enumerate(weights):
        end += w
        if slot < end:
            return i
    raise AssertionError("unreachable: slot < total")


def percentage_weights(percentage: float) -> tuple[int, int]:
    """``(on, total)``: the integer weights that give ``percentage`` (three decimals kept)."""
    if not 0 <= percentage <= 100:
        raise ValueError(f"a percentage is between 0 and 100, not {percentage}")
    if float(percentage).is_integer():
        return int(percentage), 100
    return round(Fraction(percentage) * (_FINE_TOTAL // 100)), _FINE_TOTAL


def bucket(flag: str, key: str) -> float:
    """The key's bucket for ``flag``, in ``[0, 100)``: the key is in a rollout of ``p`` percent
    exactly when ``bucket(flag, key) < p`` (see :func:`in_rollout` for the exact test)."""
    return murmur3_32((flag + key).encode("utf-8")) * 100 / 2**32


def in_rollout(flag: str, key: str, percentage: float) -> bool:
    """Whether ``key`` gets the "on" variant of ``flag`` at ``percentage``, exactly as flagd
    evaluates the weights tminus writes (integer arithmetic, no rounding at the edges)."""
    on, total = percentage_weights(percentage)
    return fractional_index(flag + key, [on, total - on]) == 0
