"""Initial tminus state schema (frozen: later changes go in new revisions).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deploys",
        sa.Column("id", sa.String(length=160), primary_key=True),
        sa.Column("plan_name", sa.String(length=120), nullable=False, index=True),
        sa.Column("environment", sa.String(length=120), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("plan_path", sa.Text(), nullable=False),
        sa.Column("plan_text", sa.Text(), nullable=False),
        sa.Column("plan_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("started_by", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("runner_pid", sa.Integer()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("due_at", sa.DateTime(timezone=True)),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("rollback_plan", sa.JSON()),
        sa.Column("abort_requested", sa.String(length=200)),
        sa.Column("fault_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("plan_name", "seq", name="uq_deploys_plan_seq"),
    )
    op.create_table(
        "locks",
        sa.Column("plan_name", sa.String(length=120), primary_key=True),
        sa.Column("environment", sa.String(length=120), primary_key=True),
        sa.Column("deploy_id", sa.String(length=160), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer()),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text()),
    )
    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "deploy_id",
            sa.String(length=160),
            sa.ForeignKey("deploys.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("gate", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=120), nullable=False),
        sa.Column("person", sa.String(length=200), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "compensations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "deploy_id",
            sa.String(length=160),
            sa.ForeignKey("deploys.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("source_key", sa.String(length=200), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("partial_ok", sa.Integer(), nullable=False),
    )
    op.create_table(
        "confirmations",
        sa.Column(
            "deploy_id", sa.String(length=160), sa.ForeignKey("deploys.id"), primary_key=True
        ),
        sa.Column("item", sa.String(length=400), primary_key=True),
        sa.Column("person", sa.String(length=200), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "deploy_id",
            sa.String(length=160),
            sa.ForeignKey("deploys.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("key", sa.String(length=200)),
        sa.Column("message", sa.Text()),
        sa.Column("data", sa.JSON()),
    )
    op.create_table(
        "maintenance",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "deploy_id",
            sa.String(length=160),
            sa.ForeignKey("deploys.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("on_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("off_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "phases",
        sa.Column(
            "deploy_id", sa.String(length=160), sa.ForeignKey("deploys.id"), primary_key=True
        ),
        sa.Column("idx", sa.Integer(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("estimate_s", sa.Float()),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "steps",
        sa.Column(
            "deploy_id", sa.String(length=160), sa.ForeignKey("deploys.id"), primary_key=True
        ),
        sa.Column("key", sa.String(length=200), primary_key=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("output", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("artifacts", sa.JSON()),
        sa.Column("step_id", sa.String(length=120)),
    )


def downgrade() -> None:
    op.drop_table("steps")
    op.drop_table("phases")
    op.drop_table("maintenance")
    op.drop_table("events")
    op.drop_table("confirmations")
    op.drop_table("compensations")
    op.drop_table("approvals")
    op.drop_table("locks")
    op.drop_table("deploys")
