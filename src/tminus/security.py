"""Tokens: made, stored and compared in one place, so no caller invents its own.

* :func:`new_token` returns ``secrets.token_urlsafe(32)``: 32 bytes (256 bits) from the
  operating system's CSPRNG, 43 URL-safe characters. It is shown once, to whoever it is for.
* :func:`hash_token` is what is stored: ``sha256:`` and the hex SHA-256 of the token. A fast
  hash is enough *here* because the token is 256 random bits: nobody can guess it, so there
  is no dictionary to try, and reversing SHA-256 (a preimage) costs about 2**256 work, fast
  hash or not. Someone who reads the stored hashes (a backup of the state database) learns
  nothing they can present. A password, chosen by a person, is a small search space: it
  would need a slow, salted hash (``hashlib.scrypt``); :func:`hash_token` refuses anything
  shorter than :data:`MIN_TOKEN_BYTES` of entropy-carrying text, so it is not used for one
  by mistake.
* :func:`verify_token` compares the presented token's hash with the stored one with
  :func:`hmac.compare_digest`, whose time does not depend on where the two differ (a plain
  ``==`` returns at the first differing byte, a timing oracle). Comparing hashes rather than
  tokens also makes the time independent of the presented token's length.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["MIN_TOKEN_BYTES", "TOKEN_BYTES", "hash_token", "new_token", "verify_token"]

#: Random bytes in a new token (256 bits).
TOKEN_BYTES = 32
#: The shortest token :func:`hash_token` accepts: 32 characters. A ``token_urlsafe`` of
#: :data:`TOKEN_BYTES` is 43; anything shorter is likely a password, which needs scrypt.
MIN_TOKEN_BYTES = 32
_PREFIX = "sha256:"


def new_token() -> str:
    """A new random token (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """What to store for ``token``: ``sha256:<hex>``. Raises ValueError for a token shorter
    than :data:`MIN_TOKEN_BYTES` characters (not one :func:`new_token` made)."""
    if len(token) < MIN_TOKEN_BYTES:
        raise ValueError(
            f"a token must be at least {MIN_TOKEN_BYTES} characters (use new_token()); "
            "a password needs a slow hash (scrypt), not this one"
        )
    return _PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def verify_token(presented: str, stored: str) -> bool:
    """Does ``presented`` match the stored hash ``stored``? Constant time in where they
    differ; False (never an exception) for a malformed stored value or any presented text."""
    if not stored.startswith(_PREFIX):
        return False
    digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).hexdigest()
    return hmac.compare_digest((_PREFIX + digest).encode(), stored.encode("utf-8", "replace"))
