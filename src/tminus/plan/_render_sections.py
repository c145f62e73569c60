"""The runbook's sections after the phases: rollback triggers, success metrics, the watch
schedule, alert thresholds, the communication plan, roles, approvals and the sign-off table
(laid out by :mod:`tminus.plan.render`)."""

from __future__ import annotations

from tminus.plan._render_parts import CHECK_HEADERS, dur, named_check, source_cell, who
from tminus.plan._runbook import (
    Fields,
    Item,
    Items,
    Para,
    Section,
    Strong,
    Table,
    Text,
    check_source,
    condition_text,
    one_line,
    txt,
)
from tminus.plan._runbook_bridge import BOX, DONE
from tminus.plan._runbook_checks import expectation, threshold
from tminus.plan.model import NotificationRule, Plan
from tminus.plan.steps import ApproveStep
from tminus.plan.values import format_duration
from tminus.plan.walk import iter_check_sites

__all__ = [
    "alerts",
    "approvals",
    "communication",
    "roles",
    "rollback_triggers",
    "sign_off",
    "success_metrics",
    "watch",
]


def rollback_triggers(plan: Plan) -> Section | None:
    rows: list[list[Text]] = []
    for t in plan.rollback_triggers:
        if t.check is None:
            rows.append(
                [txt(t.name), txt("-"), txt("(judged by a person)"), txt(t.action), txt("-")]
            )
            continue
        name, check = named_check(plan, t.check)
        where = ", ".join(str(p) for p in t.phases) if t.phases else "every phase"
        when = f"{where}, every {format_duration(t.interval)}"
        rows.append([txt(t.name), txt(name), txt(condition_text(check)), txt(t.action), txt(when)])
    if not rows:
        return None
    return Section(
        "rollback-triggers",
        "Rollback triggers",
        [Table(["Trigger", "Check", "Condition", "Action", "Evaluated"], rows)],
    )


def success_metrics(plan: Plan) -> Section | None:
    rows: list[list[Text]] = []
    for m in plan.success_metrics:
        name, check = (named_check(plan, m.check)) if m.check is not None else ("-", None)
        monitoring = (
            txt(m.monitoring) if m.monitoring else check_source(check) if check else txt("-")
        )
        rows.append(
            [
                txt(m.name),
                txt(m.target or "-"),
                txt(name),
                txt(condition_text(check) or "-"),
                monitoring,
            ]
        )
    if not rows:
        return None
    table = Table(["Metric", "Target", "Check", "Condition", "Monitoring"], rows)
    return Section("success-metrics", "Success metrics", [table])


def watch(plan: Plan) -> Section | None:
    w = plan.watch
    if w is None or not (w.schedule or w.notes):
        return None
    rows: list[list[Text]] = []
    for i, p in enumerate(w.schedule):
        if p.start:
            start = f"{format_duration(p.start)} after the deploy"
        elif p.start is not None:
            start = "end of the deploy"
        else:
            start = "end of the deploy" if i == 0 else "after the previous period"
        names = ", ".join(named_check(plan, c)[0] for c in p.checks) or "-"
        rows.append(
            [
                txt(BOX),
                txt(p.label or f"Period {i + 1}"),
                txt(start),
                txt(f"every {format_duration(p.every)}"),
                txt(f"for {format_duration(p.for_)}"),
                txt(names),
                txt(),
                txt(),
            ]
        )
    blocks: list[Table | Fields | Items] = []
    if rows:
        headers = ["", "Period", "Starts", "Every", "For", "Checks", *DONE]
        blocks.append(Table(headers, rows, kind="tasks"))
    action = {
        "rollback": "roll back",
        "operation": f"run the operation {w.operation}",
    }.get(w.on_critical, "notify")
    on_warn = "notify" if w.on_warn == "notify" else "nothing (ignored)"
    blocks.append(Fields([("On CRITICAL", txt(action)), ("On WARN", txt(on_warn))]))
    if w.notes:
        blocks.append(Items([Item(txt(n)) for n in w.notes]))
    return Section("watch", "Watch schedule", list(blocks))


def alerts(plan: Plan) -> Section | None:
    seen: dict[str, list[Text]] = {}
    for site in iter_check_sites(plan):
        name, check = named_check(plan, site.check)
        if name in seen or check is None or (check.warn is None and check.critical is None):
            continue
        seen[name] = [
            txt(name),
            source_cell(name, check),
            txt(expectation(check)),
            txt(threshold(check, "warn")),
            txt(threshold(check, "critical")),
        ]
    if not seen:
        return None
    table = Table(CHECK_HEADERS, list(seen.values()))
    return Section("alerts", "Alert thresholds", [table])


_WHEN = {
    "window_start": "At the start of the window",
    "phase_start": "At each phase start",
    "phase_end": "At each phase end",
    "success": "On success",
    "failure": "On failure",
    "rollback": "On rollback",
    "approval_needed": "When an approval is needed",
    "paused": "When the deploy pauses",
    "watch_warn": "On a watch WARN",
    "watch_critical": "On a watch CRITICAL",
}


def _when(rule: NotificationRule) -> str:
    if rule.when == "before_window":
        return f"{dur(rule.before)} before the window"
    if rule.when == "during":
        return f"Every {dur(rule.every)} during the window"
    if rule.when == "after_success":
        return f"{dur(rule.after)} after success"
    return _WHEN.get(rule.when, rule.when)


def communication(plan: Plan) -> Section | None:
    chans = plan.notifications.channels
    rows: list[list[Text]] = []
    for rule in plan.notifications.rules:
        names = rule.channels or list(chans)
        channels = ", ".join(f"{n} ({chans[n].kind})" if n in chans else n for n in names)
        audiences = (
            [rule.audience] if rule.audience else [chans[n].audience for n in names if n in chans]
        )
        audience = ", ".join(dict.fromkeys(a for a in audiences if a)) or "-"
        message = one_line(rule.message, 300) if rule.message else "(standard message)"
        rows.append(
            [
                txt(BOX),
                txt(_when(rule)),
                txt(channels or "-"),
                txt(audience),
                txt(message),
                txt(),
                txt(),
            ]
        )
    if not rows:
        return None
    table = Table(["", "When", "Channels", "Audience", "Message", *DONE], rows, kind="tasks")
    return Section("communication", "Communication plan", [table])


def roles(plan: Plan) -> Section | None:
    rows = [
        [
            txt(Strong(name)),
            txt(", ".join(r.people) or "-"),
            txt(r.contact or "-"),
            txt("; ".join(r.responsibilities) or "-"),
            txt("yes" if r.on_call else ""),
        ]
        for name, r in plan.roles.items()
    ]
    if not rows:
        return None
    table = Table(["Role", "People", "Contact", "Responsibilities", "On call"], rows)
    return Section("roles", "Roles", [table])


def approvals(plan: Plan) -> Section | None:
    a = plan.approvals
    gates = [
        Item(
            txt(f"Phase {i}, step {j}: ", Strong(s.title()), " — approval by ", ", ".join(s.roles))
        )
        for i, p in enumerate(plan.phases, 1)
        for j, s in enumerate(p.steps, 1)
        if isinstance(s, ApproveStep)
    ]
    if not a.required and not gates:
        return None
    blocks: list[Fields | Para | Items] = []
    if a.required:
        required: list[Text] = [who(plan, r) for r in a.required]
        joined = txt(*[txt(", " if i else "", r) for i, r in enumerate(required)])
        sod = (
            "yes — the person who starts the deploy cannot approve it"
            if a.separation_of_duties
            else "no"
        )
        blocks.append(
            Fields([("Required before phase 1", joined), ("Separation of duties", txt(sod))])
        )
    if gates:
        blocks += [Para(txt(Strong("Approval gates during the deploy:"))), Items(gates)]
    return Section("approvals", "Approvals", list(blocks))


def sign_off(plan: Plan) -> Section | None:
    roles = list(plan.approvals.required) or list(plan.roles)
    if not roles:
        return None
    rows = [[txt(Strong(r)), txt(), txt(), txt()] for r in roles]
    return Section(
        "sign-off", "Approval sign-off", [Table(["Role", "Name", "Signature", "Date"], rows)]
    )
