"""Tables of tminus's own state. Changed only through Alembic revisions in migrations/."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = [
    "approvals",
    "auth_keys",
    "compensations",
    "confirmations",
    "deploys",
    "events",
    "grants",
    "locks",
    "maintenance",
    "metadata",
    "outbox",
    "phases",
    "processes",
    "servers",
    "steps",
    "timers",
    "tokens",
]

metadata = MetaData()

deploys = Table(
    "deploys",
    metadata,
    Column("id", String(160), primary_key=True),
    Column("plan_name", String(120), nullable=False, index=True),
    Column("environment", String(120), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("plan_path", Text, nullable=False),
    Column("plan_text", Text, nullable=False),
    Column("plan_hash", String(64), nullable=False),
    Column("state", String(32), nullable=False),
    Column("reason", Text),
    Column("started_by", String(200), nullable=False),
    Column("host", String(200), nullable=False),
    Column("runner_pid", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("due_at", DateTime(timezone=True)),
    Column("overrides", JSON, nullable=False, default=dict),
    Column("rollback_plan", JSON),
    Column("abort_requested", String(200)),
    # 0006: who asked the runner to pause before its next step (the API's pause)
    Column("pause_requested", String(200)),
    Column("fault_at", DateTime(timezone=True)),
    # 0002: the runner's liveness (see tminus.engine.liveness)
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("runner_token", String(40)),
    UniqueConstraint("plan_name", "seq", name="uq_deploys_plan_seq"),
    # 0006: the deploy list (newest first, a page at a time: the API and the dashboard)
    Index("ix_deploys_created", "created_at", "id"),
)

steps = Table(
    "steps",
    metadata,
    Column("deploy_id", String(160), ForeignKey("deploys.id"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("title", Text, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("state", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("started_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True)),
    Column("output", Text),
    Column("error", Text),
    Column("artifacts", JSON),
    Column("step_id", String(120)),
)

phases = Table(
    "phases",
    metadata,
    Column("deploy_id", String(160), ForeignKey("deploys.id"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("state", String(32), nullable=False),
    Column("estimate_s", Float),
    Column("started_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True)),
)

events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("deploy_id", String(160), ForeignKey("deploys.id"), nullable=False, index=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("type", String(60), nullable=False),
    Column("key", String(200)),
    Column("message", Text),
    Column("data", JSON),
)

compensations = Table(
    "compensations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deploy_id", String(160), ForeignKey("deploys.id"), nullable=False, index=True),
    Column("phase", Integer, nullable=False),
    Column("source_key", String(200), nullable=False),
    Column("title", Text, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("state", String(32), nullable=False),
    Column("partial_ok", Integer, nullable=False, default=0),
)

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deploy_id", String(160), ForeignKey("deploys.id"), nullable=False, index=True),
    Column("gate", String(200), nullable=False),
    Column("role", String(120), nullable=False),
    Column("person", String(200), nullable=False),
    Column("comment", Text),
    Column("ts", DateTime(timezone=True), nullable=False),
)

confirmations = Table(
    "confirmations",
    metadata,
    Column("deploy_id", String(160), ForeignKey("deploys.id"), primary_key=True),
    Column("item", String(400), primary_key=True),
    Column("person", String(200), nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
)

locks = Table(
    "locks",
    metadata,
    Column("plan_name", String(120), primary_key=True),
    Column("environment", String(120), primary_key=True),
    Column("deploy_id", String(160), nullable=False),
    Column("holder", String(200), nullable=False),
    Column("host", String(200), nullable=False),
    Column("pid", Integer),
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text),
)

maintenance = Table(
    "maintenance",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deploy_id", String(160), ForeignKey("deploys.id"), nullable=False, index=True),
    Column("phase", Integer, nullable=False),
    Column("on_at", DateTime(timezone=True), nullable=False),
    Column("off_at", DateTime(timezone=True)),
)

# 0002: the process groups a runner started (pid == pgid; token: the start time from
# /proc/PID/stat, so a reused pid is never taken for the process recorded).
processes = Table(
    "processes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deploy_id", String(160), ForeignKey("deploys.id"), nullable=False, index=True),
    Column("key", String(200), nullable=False),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("token", String(40), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
)

# 0003 (tminus serve): every pending time-based action of a deploy is a row, fired once.
# ``key`` is unique per deploy (the idempotency key of the effect: planning the same timer
# twice inserts nothing); a server claims a due row with a lease (``lease_owner`` until
# ``lease_until``) and marks it done or skipped in the transaction that records its effect.
timers = Table(
    "timers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deploy_id", String(160), ForeignKey("deploys.id"), nullable=False, index=True),
    Column("key", String(200), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("state", String(20), nullable=False),  # pending | done | skipped | cancelled
    Column("data", JSON),
    Column("lease_owner", String(200)),
    Column("lease_until", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("fired_at", DateTime(timezone=True)),
    Column("outcome", Text),
    UniqueConstraint("deploy_id", "key", name="uq_timers_deploy_key"),
)
Index("ix_timers_state_due", timers.c.state, timers.c.due_at)

# 0003: the `tminus serve` processes of this store, with their heartbeat.
servers = Table(
    "servers",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("bind", String(200)),
    # 0006: the dashboard's address as its users reach it (`tminus serve --url`): the link
    # in notifications
    Column("url", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("stopped_at", DateTime(timezone=True)),
)

# 0004: notifications, recorded before they are sent (the outbox). ``key`` is the idempotency
# key of one message to one channel (deploy, rule, occurrence, channel): unique per deploy.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deploy_id", String(160), ForeignKey("deploys.id"), nullable=False, index=True),
    Column("key", String(300), nullable=False),
    Column("channel", String(120), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("message", JSON, nullable=False),
    Column("state", String(20), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("lease_owner", String(200)),
    Column("lease_until", DateTime(timezone=True)),
    Column("detail", Text),
    Column("ref", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True)),
    UniqueConstraint("deploy_id", "key", name="uq_outbox_deploy_key"),
)
Index("ix_outbox_state_next", outbox.c.state, outbox.c.next_at)

# 0005 (who may do what, tminus serve): API tokens, stored as their hash only (a token is
# shown once, by `tminus tokens create`); ``revoked_at`` set ends it and every session made
# from it. ``last_used_at`` is written at most once a minute.
tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("person", String(200), nullable=False, index=True),
    Column("hash", String(80), nullable=False, unique=True),
    Column("label", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoked_by", String(200)),
    Column("last_used_at", DateTime(timezone=True)),
)

# 0005: what a person may do: ``permission`` viewer | operator | approver, on ``plan`` and
# ``environment`` (``*`` = all). One row per (person, permission, plan, environment).
grants = Table(
    "grants",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("person", String(200), nullable=False, index=True),
    Column("permission", String(20), nullable=False),
    Column("plan", String(120), nullable=False),
    Column("environment", String(120), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200), nullable=False),
    UniqueConstraint("person", "permission", "plan", "environment", name="uq_grants"),
)

# 0005: keys of the store's servers, one row each (``session``: the HMAC key of the session
# cookies and CSRF tokens of `tminus serve`, made on first use; every server of the store
# reads the same row, so each accepts the others' cookies).
auth_keys = Table(
    "auth_keys",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("value", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# 0006: the plans a `tminus serve` knows (registered by path or uploaded; checked when
# registered): one row per (name, environment), the newest registration wins. A deploy started
# from the API or the dashboard reads the file at ``path`` again (checked again).
plans = Table(
    "plans",
    metadata,
    Column("name", String(120), primary_key=True),
    Column("environment", String(120), primary_key=True),
    Column("path", Text, nullable=False),
    Column("plan_hash", String(64), nullable=False),
    Column("description", Text),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("registered_by", String(200), nullable=False),
)
