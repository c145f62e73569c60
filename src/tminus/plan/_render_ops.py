"""The operations part of the runbook: quick reference, common operations, emergency
procedures, troubleshooting, risk register, contacts, maintenance windows, health checks."""

from __future__ import annotations

from tminus.plan._render_parts import CHECK_HEADERS, check_rows, dur, step_item, who
from tminus.plan._runbook import (
    Code,
    Fields,
    Item,
    Items,
    Para,
    Pre,
    Section,
    Strong,
    Table,
    Text,
    plain,
    slug,
    summarize_step,
    txt,
)
from tminus.plan._runbook_fallback import fallback, numbered
from tminus.plan.model import Operation, Plan

__all__ = [
    "common_operations",
    "contacts",
    "emergency_procedures",
    "health",
    "maintenance_windows",
    "quick_reference",
    "risks",
    "troubleshooting",
]


def risks(plan: Plan) -> Section | None:
    rows = [
        [
            txt(r.name),
            txt(r.likelihood),
            txt(r.impact),
            txt(r.mitigation),
            txt(r.contingency or "-"),
            txt(r.rollback or "-"),
        ]
        for r in plan.risks
    ]
    if not rows:
        return None
    headers = ["Risk", "Likelihood", "Impact", "Mitigation", "Contingency", "Rollback"]
    return Section("risks", "Risk register", [Table(headers, rows)])


def contacts(plan: Plan) -> Section | None:
    c = plan.contacts
    if not c.emergency and not c.escalation:
        return None
    blocks: list[Table | Para | Items] = []
    if c.emergency:
        rows = [
            [txt(e.name), who(plan, e.role) if e.role else txt("-"), txt(e.contact or "-")]
            for e in c.emergency
        ]
        blocks.append(Table(["Name", "Role", "Contact"], rows))
    if c.escalation:
        blocks += [
            Para(txt(Strong("Escalation path:"))),
            Items([Item(txt(e)) for e in c.escalation], ordered=True),
        ]
    return Section("contacts", "Contacts and escalation", list(blocks))


def _operation(plan: Plan, name: str, op: Operation, plan_file: str) -> Section:
    if True:
        params = [
            txt(
                Code(p),
                f" ({spec.type}",
                ", required" if spec.required else "",
                f", default {spec.default}" if spec.default is not None else "",
                ")",
                f": {spec.description}" if spec.description else "",
            )
            for p, spec in op.params.items()
        ]
        safety = [s for s, on in (("dangerous", op.dangerous), ("emergency", op.emergency)) if on]
        if op.confirm:
            safety.append(
                f"asks: “{op.confirm}”" if isinstance(op.confirm, str) else "asks to confirm"
            )
        fields: list[tuple[str, Text]] = [("Safety", txt(", ".join(safety) or "none"))]
        if op.estimate is not None:
            fields.append(("Estimate", txt(dur(op.estimate))))
        fields.append(
            (
                "On failure",
                txt("roll back its steps" if op.on_failure == "rollback" else "pause"),
            )
        )
        if op.roles:
            fields.append(("Roles", txt(", ".join(op.roles))))
        blocks: list[Para | Fields | Items | Table | Pre] = []
        if op.description:
            blocks.append(Para(txt(op.description.strip())))
        blocks.append(Fields(fields, inline=True))
        if params:
            blocks += [Para(txt(Strong("Parameters:"))), Items([Item(p) for p in params])]
        if op.steps:
            blocks += [
                Para(txt(Strong("Steps:"))),
                Items([step_item(plan, s) for s in op.steps], ordered=True),
            ]
        if op.checks:
            blocks += [
                Para(txt(Strong("Checks:"))),
                Table(CHECK_HEADERS, check_rows(plan, op.checks)),
            ]
        manual = [
            (n, fallback(plan, s, all_kinds=False, shown=plain(summarize_step(s))))
            for n, s in enumerate(op.steps, 1)
        ]
        if any(cmds for _, cmds in manual):
            blocks += [
                Para(
                    txt(
                        Strong("Manual fallback"),
                        " (if tminus is unavailable; each command after its step's number):",
                    )
                ),
                Pre(numbered(manual), kind="fallback"),
            ]
        params_cli = " ".join(f"--param {p}=…" for p, spec in op.params.items() if spec.required)
        confirm = " --yes" if (op.confirm or op.dangerous) else ""
        command = f"tminus op run {plan_file} {name} {params_cli}".rstrip() + confirm
        blocks.append(Pre(command))
    return Section(f"operation-{slug(name)}", name.replace("_", " ").capitalize(), list(blocks))


def common_operations(plan: Plan, plan_file: str) -> Section | None:
    """Operations people run in the normal course of things."""
    children = [
        _operation(plan, n, op, plan_file) for n, op in plan.operations.items() if not op.emergency
    ]
    if not children:
        return None
    intro = Para(txt("Named procedures, run with `tminus op run` on the same durable engine."))
    return Section("operations", "Common operations", [intro], children)


def emergency_procedures(plan: Plan, plan_file: str) -> Section | None:
    """Operations marked ``emergency: true``: stop, roll back, scale down."""
    children = [
        _operation(plan, n, op, plan_file) for n, op in plan.operations.items() if op.emergency
    ]
    if not children:
        return None
    intro = Para(txt("What to do when things go wrong. Each one asks for confirmation if marked."))
    return Section("emergency", "Emergency procedures", [intro], children)


def quick_reference(plan: Plan, plan_file: str) -> Section:
    """The commands an operator needs, and whom to call."""
    pairs: list[tuple[str, str]] = [
        (f"tminus check {plan_file}", "validate the plan"),
        (f"tminus run {plan_file} --dry-run", "what would run"),
        (f"tminus run {plan_file}", "start the deploy"),
        ("tminus status [DEPLOY]", "state, current step, estimate vs actual"),
        ("tminus log DEPLOY", "the event log"),
        ("tminus approve DEPLOY --role ROLE --as NAME", "sign off"),
        ("tminus resume DEPLOY [--retry-step|--skip-step|--rollback]", "after a pause"),
        ("tminus abort DEPLOY [--rollback]", "stop (recorded as aborted)"),
    ]
    if plan.health:
        pairs.append((f"tminus health {plan_file}", "health checks (exit 1: CRITICAL)"))
    if plan.operations:
        pairs.append((f"tminus op list {plan_file}", "operations"))
    for name, op in plan.operations.items():
        if op.emergency:
            pairs.append((f"tminus op run {plan_file} {name}", "emergency"))
    width = max(len(c) for c, _ in pairs)
    lines = [f"{c:<{width}}  # {why}" for c, why in pairs]
    blocks: list[Pre | Para | Items] = [Pre("\n".join(lines))]
    people = [
        Item(
            txt(
                Strong(c.name),
                f" ({c.role})" if c.role else None,
                f": {c.contact}" if c.contact else None,
            )
        )
        for c in plan.contacts.emergency
    ]
    if people:
        blocks += [Para(txt(Strong("Emergency contacts:"))), Items(people)]
    return Section("quick-reference", "Quick reference", list(blocks))


def troubleshooting(plan: Plan) -> Section | None:
    rows = [
        [
            txt(t.title),
            txt(t.symptom),
            txt(t.cause or "-"),
            txt(t.fix),
            txt(Code(t.operation)) if t.operation else txt("-"),
        ]
        for t in plan.troubleshooting
    ]
    if not rows:
        return None
    table = Table(["Problem", "Symptom", "Likely cause", "Fix", "Operation"], rows)
    return Section("troubleshooting", "Troubleshooting", [table])


def maintenance_windows(plan: Plan) -> Section | None:
    children: list[Section] = []
    for w in plan.maintenance_windows:
        fields: list[tuple[str, Text]] = [("Schedule", txt(w.schedule))]
        if w.operation:
            fields.append(("Operation", txt(Code(w.operation))))
        blocks: list[Fields | Para | Items] = [Fields(fields)]
        for title, entries, box in (
            ("Before:", w.pre_checklist, True),
            ("Tasks:", w.tasks, False),
            ("After:", w.post_checklist, True),
        ):
            if entries:
                blocks += [
                    Para(txt(Strong(title))),
                    Items([Item(txt(e), checkbox=box) for e in entries]),
                ]
        children.append(Section(f"window-{slug(w.name)}", w.name, list(blocks)))
    if not children:
        return None
    return Section("maintenance-windows", "Maintenance windows", [], children)


def health(plan: Plan) -> Section | None:
    if not plan.health:
        return None
    return Section("health", "Health checks", [Table(CHECK_HEADERS, check_rows(plan, plan.health))])
