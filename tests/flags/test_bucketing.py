"""The versioned bucketing: MurmurHash3 reference values and flagd's own published vectors."""

from __future__ import annotations

import pytest

from tminus.flags.bucketing import (
    HASH_VERSION,
    bucket,
    fractional_index,
    in_rollout,
    murmur3_32,
    percentage_weights,
)


@pytest.mark.parametrize(
    ("data", "seed", "expected"),
    [
        # Austin Appleby's MurmurHash3_x86_32, values from the SMHasher reference code.
        (b"", 0, 0x00000000),
        (b"", 1, 0x514E28B7),
        (b"hello", 0, 0x248BFA47),
        (b"Hello, world!", 1234, 0xFAF6CDB3),
        (b"The quick brown fox jumps over the lazy dog", 0, 0x2E4FF723),
    ],
)
def test_murmur3_reference_values(data: bytes, seed: int, expected: int) -> None:
    assert murmur3_32(data, seed) == expected


SUITS = ["clubs", "diamonds", "hearts", "spades"]


# open-feature/flagd-testbed, evaluator/gherkin/fractional.feature, the "@fractional-v2"
# examples, over the flags in evaluator/flags/testkit-flags.json.
@pytest.mark.parametrize(
    ("name", "suit"),
    [
        ("jack", "hearts"),
        ("queen", "spades"),
        ("ten", "clubs"),
        ("nine", "diamonds"),
        ("3", "clubs"),
    ],
)
def test_flagd_testbed_fractional_flag(name: str, suit: str) -> None:
    # {"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]}, four buckets of 25
    assert SUITS[fractional_index("fractional-flag" + name, [25, 25, 25, 25])] == suit


@pytest.mark.parametrize(
    ("key", "side"), [("jon@company.com", "heads"), ("jane@company.com", "tails")]
)
def test_flagd_testbed_shorthand(key: str, side: str) -> None:
    # no bucketing expression: flagKey + targetingKey; [["heads"], ["tails", 1]]
    assert ["heads", "tails"][fractional_index("fractional-flag-shorthand" + key, [1, 1])] == side


@pytest.mark.parametrize(
    ("name", "suit"),
    [("seven", "hearts"), ("eight", "diamonds"), ("nine", "clubs"), ("two", "spades")],
)
def test_flagd_testbed_shared_seed(name: str, suit: str) -> None:
    assert SUITS[fractional_index("shared-seed" + name, [25, 25, 25, 25])] == suit


@pytest.mark.parametrize(
    ("key", "hash_value", "side"),
    [
        ("ejOoVL", 0x00000000, "lower"),
        ("bY9fO-", 0x00000001, "lower"),
        ("SI7p-", 0x7FFFFFFF, "lower"),
        ("6LvT0", 0x80000000, "upper"),
        ("ceQdGm", 0xFFFFFFFF, "upper"),
    ],
)
def test_flagd_testbed_hash_edges(key: str, hash_value: int, side: str) -> None:
    # "keys chosen by brute-force search so their MurmurHash3 falls at the boundary values"
    assert murmur3_32(key.encode()) == hash_value
    assert ["lower", "upper"][fractional_index(key, [50, 50])] == side


def test_flagd_testbed_nested_bucket_values() -> None:
    # the testbed's comments: "jon@company.com bv(100)=36 ... user1 bv(100)=76"
    assert (murmur3_32(b"jon@company.com") * 100) >> 32 == 36
    assert (murmur3_32(b"user1") * 100) >> 32 == 76


def test_zero_weights_pick_nothing() -> None:
    assert fractional_index("anything", [0, 0]) == -1


@pytest.mark.parametrize(
    ("pct", "weights"),
    [
        (0, (0, 100)),
        (25, (25, 100)),
        (100, (100, 100)),
        (2.5, (2500, 100000)),
        (0.001, (1, 100000)),
    ],
)
def test_percentage_weights(pct: float, weights: tuple[int, int]) -> None:
    assert percentage_weights(pct) == weights


def test_bucket_agrees_with_the_exact_rule_and_is_sticky() -> None:
    assert HASH_VERSION == 1
    keys = [f"user-{i}" for i in range(3000)]
    previous: set[str] = set()
    for pct in (0, 1, 5, 12.5, 25, 50, 99.9, 100):
        members = {k for k in keys if in_rollout("new-checkout", k, pct)}
        assert previous <= members, f"a key left the rollout when it grew to {pct}%"
        assert members == {k for k in keys if bucket("new-checkout", k) < pct}
        previous = members
    assert previous == set(keys)
    assert not any(in_rollout("new-checkout", k, 0) for k in keys)
