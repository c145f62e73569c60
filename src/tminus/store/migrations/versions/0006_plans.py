"""The plans a `tminus serve` knows: registered by path or uploaded, checked when registered;
the API and the dashboard start deploys of these. The servers' public URL (`tminus serve
--url`), the link to a deploy in its notifications. And who asked a deploy's runner to pause
before its next step (the API's pause).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        batch.add_column(sa.Column("url", sa.Text()))
    with op.batch_alter_table("deploys") as batch:
        batch.add_column(sa.Column("pause_requested", sa.String(length=200)))
    op.create_index("ix_deploys_created", "deploys", ["created_at", "id"])
    op.create_table(
        "plans",
        sa.Column("name", sa.String(length=120), primary_key=True),
        sa.Column("environment", sa.String(length=120), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("plan_hash", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_by", sa.String(length=200), nullable=False),
    )


def downgrade() -> None:
    op.drop_index("ix_deploys_created", table_name="deploys")
    with op.batch_alter_table("deploys") as batch:
        batch.drop_column("pause_requested")
    op.drop_table("plans")
    with op.batch_alter_table("servers") as batch:
        batch.drop_column("url")
