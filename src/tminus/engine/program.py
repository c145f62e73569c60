"""The program of a deploy: the plan flattened into an ordered list of nodes with stable keys.

The engine finds its place from persisted state alone: the first node whose key has no done
record is the next action, so a crash and a resume reach the same decision.

A :class:`Selection` (``tminus run --phase``) narrows the program to some phases. Node keys do
not change (``phase/2/step/0`` stays ``phase/2/step/0``), so a selected deploy's records read
like those of a full one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tminus.errors import PlanError
from tminus.plan.model import Plan

__all__ = [
    "SELECTION_KEY",
    "Node",
    "Selection",
    "build_program",
    "select_phases",
    "split_overrides",
]

#: The key under which a deploy's phase selection is stored in its ``overrides`` (a JSON column
#: of the deploys row, written in the same insert as the deploy, so no crash can separate the
#: two). ``@`` cannot start a variable name, so it never collides with a ``--var``.
SELECTION_KEY = "@selection"

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


@dataclass(frozen=True)
class Selection:
    """Phases chosen with ``tminus run --phase`` (0-based indexes into ``plan.phases``).

    A selected run keeps the approvals gate and, unless ``skip_checklist``, the checklist gate;
    it runs the selected phases in plan order and records no success summary (the success
    metrics describe the whole deploy)."""

    phases: frozenset[int]
    skip_checklist: bool = False

    def to_data(self) -> dict[str, Any]:
        return {"phases": sorted(self.phases), "skip_checklist": self.skip_checklist}

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Selection:
        return cls(
            frozenset(int(p) for p in data.get("phases", [])),
            bool(data.get("skip_checklist", False)),
        )

    def shown(self, plan: Plan) -> dict[str, Any]:
        """As operators see it (``tminus status``, the ``deploy.selection`` event): 1-based."""
        chosen = [p for p in sorted(self.phases) if p < len(plan.phases)]
        return {
            "phases": [p + 1 for p in chosen],
            "names": [plan.phases[p].name for p in chosen],
            "skip_checklist": self.skip_checklist,
        }

    def describe(self, plan: Plan) -> str:
        names = ", ".join(
            f"{p + 1} ({plan.phases[p].name})" for p in sorted(self.phases) if p < len(plan.phases)
        )
        return f"phases {names}" + ("; checklist skipped" if self.skip_checklist else "")


def split_overrides(stored: Mapping[str, Any] | None) -> tuple[dict[str, str], Selection | None]:
    """A deploy row's ``overrides``: the ``--var`` values, and the phase selection if any."""
    values = dict(stored or {})
    raw = values.pop(SELECTION_KEY, None)
    selection = Selection.from_data(raw) if isinstance(raw, Mapping) else None
    return {str(k): str(v) for k, v in values.items()}, selection


def select_phases(plan: Plan, wanted: Iterable[str]) -> frozenset[int]:
    """Phase indexes for ``--phase`` values: a phase's name (exact, else case-insensitive), its
    number in the plan (1-based, as the runbook numbers them), or the start of one phase's name
    (case-insensitive). Anything else, or a value that fits several phases, is a
    :class:`PlanError` (exit 2) with a did-you-mean hint or the candidates."""
    from tminus.plan.problems import did_you_mean

    names = [p.name for p in plan.phases]
    chosen: set[int] = set()
    for raw in wanted:
        token = raw.strip()
        hits = [i for i, n in enumerate(names) if n == token]
        if not hits:
            hits = [i for i, n in enumerate(names) if n.casefold() == token.casefold()]
        if not hits and token.isdigit() and 1 <= int(token) <= len(names):
            hits = [int(token) - 1]
        if not hits and token:
            hits = [i for i, n in enumerate(names) if n.casefold().startswith(token.casefold())]
        if len(hits) > 1:
            raise PlanError(
                f"--phase '{raw}' fits {len(hits)} phases: "
                + "; ".join(f"{i + 1}: {names[i]}" for i in hits),
                hint="give the whole name or the number",
            )
        if not hits:
            listing = "; ".join(f"{i + 1}: {n}" for i, n in enumerate(names))
            raise PlanError(
                f"--phase: no phase '{raw}' in plan '{plan.name}'",
                hint=did_you_mean(token, names) or f"phases are {listing}",
            )
        chosen.add(hits[0])
    if not chosen:
        raise PlanError("--phase: no phase selected")
    return frozenset(chosen)


def build_program(plan: Plan, selection: Selection | None = None) -> list[Node]:
    nodes: list[Node] = []
    if selection is None or not selection.skip_checklist:
        for i, item in enumerate(plan.checklist):
            nodes.append(Node(f"checklist/{i}", "checklist", item.item, index=i))
    if plan.approvals.required:
        nodes.append(Node("approvals", "approvals", "Approvals"))
    # The success summary follows the phases of the window (those before the first delayed
    # one), not a cleanup phase 30 days later.
    in_window = len(plan.in_window_phases())
    for p, phase in enumerate(plan.phases):
        if p == in_window and selection is None:
            nodes.append(Node("summary", "summary", "Success summary"))
        if selection is not None and p not in selection.phases:
            continue
        nodes.append(Node(f"phase/{p}/start", "phase_start", phase.name, phase=p))
        for j, step in enumerate(phase.steps):
            nodes.append(Node(f"phase/{p}/step/{j}", "step", step.title(), phase=p, index=j))
        for j, chk in enumerate(phase.verify):
            title = getattr(chk, "name", None) or getattr(chk, "use", None) or f"verify {j + 1}"
            nodes.append(Node(f"phase/{p}/verify/{j}", "verify", str(title), phase=p, index=j))
        nodes.append(Node(f"phase/{p}/end", "phase_end", phase.name, phase=p))
    if selection is None and in_window == len(plan.phases):
        nodes.append(Node("summary", "summary", "Success summary"))
    return nodes
