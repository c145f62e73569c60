"""Who may do what (tminus serve): API tokens (stored hashed), grants (viewer, operator,
approver per plan and environment) and the servers' session key.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("person", sa.String(length=200), nullable=False, index=True),
        sa.Column("hash", sa.String(length=80), nullable=False, unique=True),
        sa.Column("label", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_by", sa.String(length=200)),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "grants",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("person", sa.String(length=200), nullable=False, index=True),
        sa.Column("permission", sa.String(length=20), nullable=False),
        sa.Column("plan", sa.String(length=120), nullable=False),
        sa.Column("environment", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.UniqueConstraint("person", "permission", "plan", "environment", name="uq_grants"),
    )
    op.create_table(
        "auth_keys",
        sa.Column("name", sa.String(length=40), primary_key=True),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("auth_keys")
    op.drop_table("grants")
    op.drop_table("tokens")
