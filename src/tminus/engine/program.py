"""The program of a deploy: the plan flattened into an ordered list of nodes with stable keys.

The engine finds its place from persisted state alone: the first node whose key has no done
record is the next action, so a crash and a resume reach the same decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tminus.plan.model import Plan

__all__ = ["Node", "build_program"]

NodeKind = Literal[
    "checklist", "approvals", "phase_start", "step", "verify", "phase_end", "summary"
]


@dataclass(frozen=True)
class Node:
    key: str
    kind: NodeKind
    title: str
    phase: int = -1
    index: int = -1


def build_program(plan: Plan) -> list[Node]:
    nodes: list[Node] = []
    for i, item in enumerate(plan.checklist):
        nodes.append(Node(f"checklist/{i}", "checklist", item.item, index=i))
    if plan.approvals.required:
        nodes.append(Node("approvals", "approvals", "Approvals"))
    for p, phase in enumerate(plan.phases):
        nodes.append(Node(f"phase/{p}/start", "phase_start", phase.name, phase=p))
        for j, step in enumerate(phase.steps):
            nodes.append(Node(f"phase/{p}/step/{j}", "step", step.title(), phase=p, index=j))
        for j, chk in enumerate(phase.verify):
            title = getattr(chk, "name", None) or getattr(chk, "use", None) or f"verify {j + 1}"
            nodes.append(Node(f"phase/{p}/verify/{j}", "verify", str(title), phase=p, index=j))
        nodes.append(Node(f"phase/{p}/end", "phase_end", phase.name, phase=p))
    nodes.append(Node("summary", "summary", "Success summary"))
    return nodes
