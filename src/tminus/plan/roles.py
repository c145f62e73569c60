"""Who may sign: the one rule of approvals (``tminus approve``) and milestone sign-offs
(``tminus signoff``). The role exists in the plan, the person is one of its ``people`` when
it lists any, and with ``approvals.separation_of_duties`` the person who started the deploy
does not sign it."""

from __future__ import annotations

from tminus.plan.model import Plan
from tminus.plan.problems import did_you_mean

__all__ = ["signer_problem"]


def signer_problem(
    plan: Plan, role: str, person: str, started_by: str, deploy_id: str, verb: str
) -> tuple[str, str | None] | None:
    """Why ``person`` cannot sign as ``role`` (message, hint), or None. ``verb``: what they
    would do ("approve it", "sign it off")."""
    if role not in plan.roles:
        return (
            f"no role '{role}' in plan '{plan.name}'",
            did_you_mean(role, plan.roles) or "roles: " + ", ".join(plan.roles),
        )
    people = plan.roles[role].people
    if people and person not in people:
        return f"{person} is not in role '{role}'", "people: " + ", ".join(people)
    if plan.approvals.separation_of_duties and person == started_by:
        return f"separation of duties: {person} started {deploy_id} and cannot {verb}", None
    return None
