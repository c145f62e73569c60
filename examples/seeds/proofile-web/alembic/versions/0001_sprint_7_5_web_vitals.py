"""Sprint 7.5: store Web Vitals samples reported by the frontend.

Revision ID: 0001_sprint_7_5
Revises:
Create Date: 2025-11-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_sprint_7_5"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_vitals_samples",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("page", sa.Text, nullable=False),
        sa.Column("metric", sa.String(8), nullable=False),  # FCP, LCP, CLS
        sa.Column("value", sa.Float, nullable=False),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_web_vitals_samples_metric_time", "web_vitals_samples", ["metric", "recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_web_vitals_samples_metric_time", table_name="web_vitals_samples")
    op.drop_table("web_vitals_samples")
