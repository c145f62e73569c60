"""Deploy and step states, with the transitions the engine allows.

The one home of the state sets (``TERMINAL`` among them): a leaf that imports nothing of
tminus, so the store and the test harnesses below the engine import it too.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "DONE_STEP_STATES",
    "HANDOVER_REASON",
    "TERMINAL",
    "WAITING",
    "DeployState",
    "StepState",
    "exit_code_for",
]


class DeployState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    AWAITING_CONFIRMATION = "awaiting_confirmation"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    SCHEDULED = "scheduled"
    ROLLING_BACK = "rolling_back"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"  # a failure, and the rollback completed
    FAILED = "failed"  # a failure with no (or an incomplete) rollback
    ABORTED = "aborted"  # stopped by an operator


class StepState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    IGNORED = "ignored"  # failed under on_failure: continue
    SKIPPED = "skipped"
    WARNED = "warned"  # a check at WARN level: passed, with a notification
    ROLLED_BACK = "rolled_back"  # succeeded, then undone by a rollback


TERMINAL = frozenset(
    {DeployState.SUCCEEDED, DeployState.ROLLED_BACK, DeployState.FAILED, DeployState.ABORTED}
)
WAITING = frozenset(
    {
        DeployState.AWAITING_CONFIRMATION,
        DeployState.AWAITING_APPROVAL,
        DeployState.PAUSED,
        DeployState.SCHEDULED,
    }
)
#: The reason of a deploy its runner paused because its ``tminus serve`` was stopping (SIGTERM):
#: the step in flight finished, the next did not start. A server resumes such a deploy by
#: itself; any other pause waits for an operator.
HANDOVER_REASON = "handed over: its tminus serve was stopping, paused before the next step"

DONE_STEP_STATES = frozenset(
    {
        StepState.SUCCEEDED,
        StepState.SKIPPED,
        StepState.IGNORED,
        StepState.WARNED,
        StepState.ROLLED_BACK,
    }
)


def exit_code_for(state: DeployState) -> int:
    """0 done, 1 failed (and rolled back), 3 waiting (approval, pause or scheduled)."""
    if state == DeployState.SUCCEEDED:
        return 0
    if state in WAITING:
        return 3
    return 1
