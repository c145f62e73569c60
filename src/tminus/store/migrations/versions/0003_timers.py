"""tminus serve: the timers table (every pending time-based action of a deploy, claimed with
a lease and fired once) and the servers table (the serve processes and their heartbeat).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "timers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "deploy_id",
            sa.String(length=160),
            sa.ForeignKey("deploys.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("data", sa.JSON()),
        sa.Column("lease_owner", sa.String(length=200)),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("fired_at", sa.DateTime(timezone=True)),
        sa.Column("outcome", sa.Text()),
        sa.UniqueConstraint("deploy_id", "key", name="uq_timers_deploy_key"),
    )
    op.create_index("ix_timers_state_due", "timers", ["state", "due_at"])
    op.create_table(
        "servers",
        sa.Column("id", sa.String(length=200), primary_key=True),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("bind", sa.String(length=200)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("servers")
    op.drop_index("ix_timers_state_due", table_name="timers")
    op.drop_table("timers")
