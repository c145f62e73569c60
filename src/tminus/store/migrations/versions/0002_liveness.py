"""Runner liveness: deploys.heartbeat_at and deploys.runner_token; the processes table (the
process groups a runner started, so a dead runner's orphans can be found and killed).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deploys", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))
    op.add_column("deploys", sa.Column("runner_token", sa.String(length=40)))
    op.create_table(
        "processes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "deploy_id",
            sa.String(length=160),
            sa.ForeignKey("deploys.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("processes")
    with op.batch_alter_table("deploys") as batch:
        batch.drop_column("runner_token")
        batch.drop_column("heartbeat_at")
