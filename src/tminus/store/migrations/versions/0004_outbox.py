"""Notifications: the outbox table (each message to each channel recorded before it is sent,
then marked sent or failed with the receiver's answer; delivered at most once per key).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "deploy_id",
            sa.String(length=160),
            sa.ForeignKey("deploys.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("channel", sa.String(length=120), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=200)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("detail", sa.Text()),
        sa.Column("ref", sa.String(length=200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("deploy_id", "key", name="uq_outbox_deploy_key"),
    )
    op.create_index("ix_outbox_state_next", "outbox", ["state", "next_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_state_next", table_name="outbox")
    op.drop_table("outbox")
