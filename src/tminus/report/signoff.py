"""``tminus signoff``: a role signs off a milestone of a deploy (the seeds' day-1 and day-7
sign-offs), recorded as an approval row with ``gate = "signoff:<milestone>"`` and a
``signoff.given`` event, in one transaction.

The rules are those of ``tminus approve``: the role must be one of the plan's, the person one of
the role's ``people`` when it lists any, and under ``approvals.separation_of_duties`` not the
person who started the deploy. A role signs a milestone once. Only a deploy that succeeded can
be signed off, or one whose window succeeded while a delayed phase waits (``scheduled``), or
one whose watch is running (``watch.*`` events and no ``watch.ended``/``watch.stopped`` after
them); never a deploy that failed, was rolled back or aborted."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from tminus.clock import now
from tminus.errors import NotResumable, PlanError
from tminus.report.data import load_deploy
from tminus.report.sections import SIGNOFF_PREFIX
from tminus.states import DeployState
from tminus.store import schema as t

if TYPE_CHECKING:
    from tminus.store import Store

__all__ = ["MILESTONE", "can_sign_off", "sign_off"]

#: A milestone's name: ``day-1``, ``day-7``, ``week-2``…
MILESTONE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")

_NEVER = frozenset(
    {DeployState.ROLLED_BACK, DeployState.FAILED, DeployState.ABORTED, DeployState.ROLLING_BACK}
)
_WATCH_ENDS = ("watch.ended", "watch.stopped")


def _watch_running(events: list[dict[str, Any]]) -> bool:
    last = None
    for e in events:
        if str(e["type"]).startswith("watch."):
            last = str(e["type"])
    return last is not None and last not in _WATCH_ENDS


def can_sign_off(d: dict[str, Any], phases: dict[int, Any], events: list[dict[str, Any]]) -> bool:
    """Whether deploy row ``d`` may be signed off (see the module's docstring)."""
    state = str(d["state"])
    if state == DeployState.SUCCEEDED:
        return True
    if state in _NEVER:
        return False
    if _watch_running(events):
        return True
    return (
        state == DeployState.SCHEDULED
        and bool(phases)
        and all(r["state"] == "succeeded" for r in phases.values())
    )


def sign_off(
    store: Store, deploy_id: str, milestone: str, role: str, person: str, comment: str | None
) -> str:
    """Record the sign-off; the line to print. :class:`PlanError` or :class:`NotResumable`
    (exit 2) for a refusal."""
    d, plan = load_deploy(store, deploy_id)
    if not MILESTONE.match(milestone):
        raise PlanError(
            f"'{milestone}' is not a milestone name",
            hint="letters, digits, '-', '_' and '.', e.g. day-1 or day-7",
        )
    if not can_sign_off(d, store.phase_rows(deploy_id), store.events(deploy_id)):
        raise NotResumable(
            f"deploy {deploy_id} is {d['state']}: only a deploy that succeeded (or whose "
            "watch is running) can be signed off",
            hint=f"tminus status {deploy_id}",
        )
    if plan is None:
        raise PlanError(f"the plan recorded with {deploy_id} no longer loads: no roles to check")
    from tminus.plan.roles import signer_problem

    problem = signer_problem(plan, role, person, d["started_by"], deploy_id, "sign it off")
    if problem is not None:
        raise PlanError(problem[0], hint=problem[1])
    gate = SIGNOFF_PREFIX + milestone
    with store.tx() as conn:
        # Serialise sign-offs of one deploy (PostgreSQL row lock; SQLite's write transaction
        # already holds the database's write lock), then look for an earlier one.
        conn.execute(select(t.deploys.c.id).where(t.deploys.c.id == deploy_id).with_for_update())
        earlier = conn.execute(
            select(t.approvals.c.person, t.approvals.c.ts).where(
                t.approvals.c.deploy_id == deploy_id,
                t.approvals.c.gate == gate,
                t.approvals.c.role == role,
            )
        ).first()
        if earlier is not None:
            raise PlanError(
                f"{role} has already signed off '{milestone}' of {deploy_id} "
                f"(as {earlier.person} at {earlier.ts:%Y-%m-%d %H:%M:%S})",
                hint=f"tminus report {deploy_id} lists the sign-offs",
            )
        ts = now()
        conn.execute(
            insert(t.approvals).values(
                deploy_id=deploy_id, gate=gate, role=role, person=person, comment=comment, ts=ts
            )
        )
        conn.execute(
            insert(t.events).values(
                deploy_id=deploy_id,
                ts=ts,
                type="signoff.given",
                key=gate,
                message=f"{milestone}: {role} signed off by {person}",
                data={"milestone": milestone, "role": role, "person": person, "comment": comment},
            )
        )
    return f"{role} signed off '{milestone}' of {deploy_id} as {person}"
