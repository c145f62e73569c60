"""``tminus.security`` (issue #13, item 8): tokens made with the OS CSPRNG, stored as a SHA-256
hash, compared in constant time.

Mutations tried (each made the named test fail, then was restored):

* ``verify_token`` comparing with ``==`` on the raw strings →
  ``test_verify_uses_compare_digest`` (compare_digest never called).
* ``hash_token`` without the length check → ``test_short_secrets_are_refused``.
* ``new_token`` with ``secrets.token_urlsafe(8)`` → ``test_new_tokens_are_256_bit_and_distinct``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from tminus import security
from tminus.security import MIN_TOKEN_BYTES, hash_token, new_token, verify_token


def test_new_tokens_are_256_bit_and_distinct() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for t in list(tokens)[:50]:
        raw = base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
        assert len(raw) == 32 and len(t) == 43
        assert set(t) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_hash_is_sha256_and_verifies() -> None:
    t = new_token()
    stored = hash_token(t)
    assert stored == "sha256:" + hashlib.sha256(t.encode()).hexdigest()
    assert t not in stored
    assert verify_token(t, stored)
    assert not verify_token(t[:-1], stored)
    assert not verify_token(t + "x", stored)
    assert not verify_token(new_token(), stored)
    assert not verify_token("", stored)
    assert not verify_token(t, stored.replace("sha256:", "md5:"))  # malformed: False
    assert not verify_token(t, "")
    assert not verify_token("\udcff" * 40, stored)  # lone surrogates: no exception


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="scrypt"):
        hash_token("hunter2")
    with pytest.raises(ValueError):
        hash_token("x" * (MIN_TOKEN_BYTES - 1))
    assert hash_token("x" * MIN_TOKEN_BYTES).startswith("sha256:")


def test_verify_uses_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison goes through hmac.compare_digest, on equal-length hashes (so neither
    where the values differ nor the presented token's length changes its time)."""
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    t = new_token()
    stored = hash_token(t)
    assert verify_token(t, stored) and not verify_token("short", stored)
    assert len(seen) == 2
    assert all(len(a) == len(b) == len(stored) for a, b in seen)
