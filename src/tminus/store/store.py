"""The state store over SQLAlchemy Core: SQLite by default, PostgreSQL with a URL.

Every state change is committed before the engine takes its next action. SQLite runs in WAL
mode with ``synchronous=NORMAL``: a commit survives a crash of the tminus process (kill -9);
only a power loss can lose the newest commits. On PostgreSQL a commit waits for its WAL flush,
except those of ``tx(flush=False)``: a step's end, the start of a step that may run again, the
process records; a runner crash keeps them, and only a crash of the database server before
the next flushed commit can lose them (docs/architecture.md, "What is durable when").

Every counted commit passes the fault point :func:`tminus.faults.after_commit`: when a test has
installed a fault plan (through :mod:`tminus.testing.seam`) the process kills itself right after
its N-th counted commit, so crash tests can stop the runner at every durable point. Heartbeats
and process records are not counted. Times come from :func:`tminus.clock.now`.

Opening a store creates or upgrades its schema; several processes may do so at the same
instant (two first runs on a new machine): the upgrade runs under an exclusive lock, a
PostgreSQL advisory lock on the upgrading connection, or an ``flock`` of ``<db>.lock`` beside
a SQLite file, and the revision is read again once the lock is held.

The store is composed of parts, one module each: :mod:`._connect` (the engine, the schema and
its upgrade, the ``tx`` transactions and commit counting), :mod:`.events` (the event log),
:mod:`.deploys` (deploy rows, approvals, checklist confirmations, maintenance windows),
:mod:`.steps` (steps, phases, compensations), :mod:`.runners` (the runner, its heartbeat,
process records), :mod:`.locks` (plan locks and takeovers), :mod:`.timers` (the durable timers and
servers of ``tminus serve``), :mod:`.outbox` (notifications recorded before they are
sent), :mod:`.access` (the API's tokens and grants, the session key), :mod:`.plans` (the plans a
server knows) and :mod:`.status` (the
reads of the public status page). :class:`Store` joins them.
"""

from __future__ import annotations

from tminus.files import default_state_url
from tminus.store._connect import HEAD_REVISION
from tminus.store.access import AccessMixin
from tminus.store.locks import TERMINAL_STATES, HolderCheck, LocksMixin
from tminus.store.outbox import OutboxMixin
from tminus.store.plans import PlansMixin
from tminus.store.runners import RunnersMixin
from tminus.store.status import StatusMixin
from tminus.store.steps import StepsMixin
from tminus.store.timers import TimersMixin

__all__ = [
    "HEAD_REVISION",
    "TERMINAL_STATES",
    "HolderCheck",
    "Store",
    "default_state_url",
]


class Store(
    LocksMixin,
    StepsMixin,
    RunnersMixin,
    TimersMixin,
    OutboxMixin,
    AccessMixin,
    StatusMixin,
    PlansMixin,
):
    """All reads and writes of tminus state."""
