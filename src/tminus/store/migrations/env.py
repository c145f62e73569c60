"""Alembic environment for tminus's own schema; the store passes its connection in."""

from __future__ import annotations

from alembic import context

from tminus.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
