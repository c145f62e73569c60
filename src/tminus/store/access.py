"""Who may do what: API tokens, grants and the servers' session key (``tokens``, ``grants`` and
``auth_keys`` tables, 0005).

The store keeps a token's *hash* only (made by :mod:`tminus.security`, which the callers use:
the store never sees a token). A token is looked up by its hash, revoked by setting
``revoked_at`` (kept, so ``tminus tokens list`` shows who had access and when it ended), and
its ``last_used_at`` is written at most once a minute (:meth:`AccessMixin.touch_token`: a read
first, no write transaction per request).

A grant gives a person one permission (``viewer``, ``operator``, ``approver``) on a plan and an
environment, either of which may be ``*`` (all). What a permission implies is decided in
``tminus.serve.auth``, not here.

``auth_keys`` holds named random keys shared by every server of the store; ``session`` is the
HMAC key of the session cookies and CSRF tokens, made on first use (two servers racing to make
it agree on the first one written).

Writes here are not counted as fault points (crash tests count the runner's commits).
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from tminus.clock import now
from tminus.store import schema as t
from tminus.store._connect import StoreBase
from tminus.store._rows import _row

__all__ = ["PERMISSIONS", "TOUCH_EVERY", "AccessMixin", "valid_person"]

#: The permissions a grant may give.
PERMISSIONS = ("viewer", "operator", "approver")
#: ``last_used_at`` of a token is written at most this often.
TOUCH_EVERY = timedelta(minutes=1)

#: A person's name: 1 to 200 characters, no control character, no surrounding space.
_PERSON = re.compile(r"[^\x00-\x1f\x7f]{1,200}")


def valid_person(name: str) -> str | None:
    """``name`` without surrounding spaces if it can name a person (in a token, a grant, a
    trusted header), else None."""
    name = name.strip()
    return name if _PERSON.fullmatch(name) else None


#: The columns of a token shown to anyone: never its hash.
_TOKEN_COLUMNS = (
    t.tokens.c.id,
    t.tokens.c.person,
    t.tokens.c.label,
    t.tokens.c.created_at,
    t.tokens.c.created_by,
    t.tokens.c.revoked_at,
    t.tokens.c.revoked_by,
    t.tokens.c.last_used_at,
)


class AccessMixin(StoreBase):
    """Tokens, grants and the session key."""

    # --- tokens -----------------------------------------------------------------------------
    def add_token(self, person: str, token_hash: str, *, label: str | None, by: str) -> int:
        """Record a token by its hash (``tminus.security.hash_token``); its id."""
        with self.tx(count=False) as conn:
            res = conn.execute(
                insert(t.tokens).values(
                    person=person,
                    hash=token_hash,
                    label=label,
                    created_at=now(),
                    created_by=by,
                )
            )
            return int(res.inserted_primary_key[0])  # type: ignore[index]

    def tokens(self, *, person: str | None = None) -> list[dict[str, Any]]:
        """Every token (revoked ones too), oldest first, without its hash."""
        q = select(*_TOKEN_COLUMNS).order_by(t.tokens.c.id)
        if person is not None:
            q = q.where(t.tokens.c.person == person)
        with self._read() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    def token(self, token_id: int) -> dict[str, Any] | None:
        """One token by id, without its hash (None if there is none)."""
        with self._read() as conn:
            row = (
                conn.execute(select(*_TOKEN_COLUMNS).where(t.tokens.c.id == token_id))
                .mappings()
                .first()
            )
        return _row(row) if row else None

    def token_by_hash(self, token_hash: str) -> dict[str, Any] | None:
        """The token stored with ``token_hash`` (its hash included, for the caller's
        constant-time comparison), revoked or not; None if there is none."""
        with self._read() as conn:
            row = (
                conn.execute(select(t.tokens).where(t.tokens.c.hash == token_hash))
                .mappings()
                .first()
            )
        return _row(row) if row else None

    def revoke_token(self, token_id: int, *, by: str) -> dict[str, Any] | None:
        """Revoke a token (its sessions end with it). Returns its row, None if there is no
        such token; a token already revoked keeps its first ``revoked_at``."""
        with self.tx(count=False) as conn:
            conn.execute(
                update(t.tokens)
                .where(t.tokens.c.id == token_id, t.tokens.c.revoked_at.is_(None))
                .values(revoked_at=now(), revoked_by=by)
            )
            row = (
                conn.execute(select(*_TOKEN_COLUMNS).where(t.tokens.c.id == token_id))
                .mappings()
                .first()
            )
        return _row(row) if row else None

    def touch_token(self, token_id: int, last_used_at: datetime | None) -> bool:
        """Record a use of the token now, unless the recorded one (``last_used_at``, as the
        caller read it) is less than :data:`TOUCH_EVERY` old. True when it wrote."""
        at = now()
        if last_used_at is not None and at - last_used_at < TOUCH_EVERY:
            return False
        with self.tx(count=False) as conn:
            res = conn.execute(
                update(t.tokens)
                .where(
                    t.tokens.c.id == token_id,
                    (t.tokens.c.last_used_at.is_(None))
                    | (t.tokens.c.last_used_at < at - TOUCH_EVERY),
                )
                .values(last_used_at=at)
            )
        return res.rowcount == 1

    # --- grants -----------------------------------------------------------------------------
    def add_grant(
        self, person: str, permission: str, *, plan: str, environment: str, by: str
    ) -> bool:
        """Grant ``permission`` on (plan, environment) to ``person``; False if they had it."""
        if permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}")
        key = (
            t.grants.c.person == person,
            t.grants.c.permission == permission,
            t.grants.c.plan == plan,
            t.grants.c.environment == environment,
        )
        with self.tx(count=False) as conn:
            if conn.execute(select(t.grants.c.id).where(*key)).first() is not None:
                return False
            conn.execute(
                insert(t.grants).values(
                    person=person,
                    permission=permission,
                    plan=plan,
                    environment=environment,
                    created_at=now(),
                    created_by=by,
                )
            )
        return True

    def remove_grant(self, person: str, permission: str, *, plan: str, environment: str) -> bool:
        """Take back exactly that grant; False if there was none."""
        with self.tx(count=False) as conn:
            res = conn.execute(
                delete(t.grants).where(
                    t.grants.c.person == person,
                    t.grants.c.permission == permission,
                    t.grants.c.plan == plan,
                    t.grants.c.environment == environment,
                )
            )
        return res.rowcount > 0

    def grants(self, *, person: str | None = None) -> list[dict[str, Any]]:
        """The grants (of one person, or all), by person then permission."""
        q = select(t.grants).order_by(
            t.grants.c.person, t.grants.c.permission, t.grants.c.plan, t.grants.c.environment
        )
        if person is not None:
            q = q.where(t.grants.c.person == person)
        with self._read() as conn:
            return [_row(r) for r in conn.execute(q).mappings()]

    # --- keys -------------------------------------------------------------------------------
    def auth_key(self, name: str) -> str:
        """The store's random key ``name`` (64 hex characters), made on first use. Every
        server of the store gets the same one."""
        q = select(t.auth_keys.c.value).where(t.auth_keys.c.name == name)
        with self._read() as conn:
            value = conn.execute(q).scalar()
        if value is not None:
            return str(value)
        try:
            with self.tx(count=False) as conn:
                value = conn.execute(q).scalar()
                if value is None:
                    value = secrets.token_hex(32)
                    conn.execute(
                        insert(t.auth_keys).values(name=name, value=value, created_at=now())
                    )
        except IntegrityError:  # another server made it first (PostgreSQL): take theirs
            with self._read() as conn:
                value = conn.execute(q).scalar_one()
        return str(value)
