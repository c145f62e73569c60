"""Render a plan as the runbook a team would otherwise write by hand (Markdown or HTML).

:func:`build_runbook` assembles the neutral document (see :mod:`tminus.plan._runbook`); the two
renderers only lay it out. Sections the plan leaves empty are omitted. Nothing is resolved:
``${...}`` references are printed as written, and secret-bearing fields are never printed.
"""

from __future__ import annotations

from tminus.plan import _render_ops as ops
from tminus.plan._render_parts import (
    CHECK_HEADERS,
    check_rows,
    dur,
    named_check,
    risk_label,
    step_item,
    step_label,
    step_line,
    who,
)
from tminus.plan._runbook import (
    Chart,
    Code,
    Fields,
    Item,
    Items,
    Para,
    Pre,
    Runbook,
    Section,
    Strong,
    Table,
    Text,
    automatic_compensation,
    build_timeline,
    check_source,
    condition_text,
    levels,
    one_line,
    phase_title,
    summarize_step,
    txt,
)
from tminus.plan.model import NotificationRule, Phase, Plan
from tminus.plan.steps import ApproveStep, MaintenanceStep
from tminus.plan.values import format_duration
from tminus.plan.walk import iter_check_sites

__all__ = ["build_runbook", "render_html", "render_markdown"]


def render_markdown(plan: Plan, plan_file: str | None = None) -> str:
    """The runbook as GitHub-flavoured Markdown."""
    from tminus.plan._render_md import to_markdown

    return to_markdown(build_runbook(plan, plan_file))


def render_html(plan: Plan, plan_file: str | None = None) -> str:
    """The runbook as one self-contained HTML file (inline CSS and SVG, prints well)."""
    from tminus.plan._render_html import to_html

    return to_html(build_runbook(plan, plan_file))


def _compensations(phase: Phase) -> list[tuple[Text, Text, str]]:
    """(action, what it does, why) for a phase's rollback, in the order the engine runs it."""
    out: list[tuple[Text, Text, str]] = []
    for step in phase.rollback:
        out.append((txt(step.title()), summarize_step(step), "phase rollback step"))
    for step in reversed(phase.steps):
        for undo in step.undo:
            out.append((txt(undo.title()), summarize_step(undo), f"undo of “{step_label(step)}”"))
        auto = automatic_compensation(step)
        if auto is not None:
            out.append((txt("(automatic)"), auto, f"compensates “{step_label(step)}”"))
    return out


# --- sections -------------------------------------------------------------------------------


def _overview(plan: Plan) -> Section:
    fields: list[tuple[str, Text]] = [
        ("Version", txt(plan.version or "-")),
        ("Environment", txt(plan.environment)),
        ("Owner", txt(plan.owner or "-")),
        ("Risk", txt(risk_label(plan.risk))),
        ("Status", txt(plan.status or "-")),
    ]
    m = plan.maintenance
    if m is not None:
        how = (
            txt("flag file ", Code(m.flag_file))
            if m.flag_file
            else txt("on ", Code(m.enable or ""))
        )
        fields.append(("Maintenance mode", how))
    blocks: list[Para | Fields] = [Fields(fields)]
    if plan.description:
        blocks.insert(0, Para(txt(plan.description.strip())))
    return Section("overview", "Overview", list(blocks))


def _summary(plan: Plan) -> Section:
    w = plan.window
    if w.start is not None:
        start = w.start.strftime("%Y-%m-%d %H:%M") + f" {w.timezone}"
        if w.duration:
            end = w.start + w.duration
            start += " – " + end.strftime(
                "%H:%M" if end.date() == w.start.date() else "%Y-%m-%d %H:%M"
            )
    else:
        start = f"TBD ({w.timezone})"
    inside = plan.in_window_phases()
    delayed = len(plan.phases) - len(inside)
    steps = sum(len(p.steps) for p in plan.phases)
    phases = f"{len(plan.phases)}" + (
        f" ({len(inside)} in the window, {delayed} later)" if delayed else ""
    )
    fields: list[tuple[str, Text]] = [
        ("Risk", txt(risk_label(plan.risk))),
        ("Window", txt(start)),
        ("Window duration", txt(dur(w.duration))),
        ("Allowed downtime", txt(dur(w.max_downtime))),
        ("Total estimated duration", txt(format_duration(plan.total_estimate()))),
        ("Total downtime", txt(format_duration(plan.downtime_estimate()))),
        ("Phases", txt(phases)),
        ("Steps", txt(str(steps))),
    ]
    if w.notes:
        fields.append(("Window notes", txt(one_line(w.notes, 400))))
    return Section("summary", "Summary", [Fields(fields)])


def _checklist(plan: Plan) -> Section | None:
    if not plan.checklist:
        return None
    groups: dict[str, list[Item]] = {}
    for entry in plan.checklist:
        parts: list[Text] = [txt(entry.item)]
        if entry.owner:
            parts.append(txt(" — owner: ", who(plan, entry.owner)))
        if entry.check is None:
            parts.append(txt(" — manual"))
        else:
            name, check = named_check(plan, entry.check)
            cond = condition_text(check)
            parts.append(txt(" — automated: ", Strong(name), " (", check_source(check), ")"))
            parts.append(txt(f" {cond}") if cond else ())
        groups.setdefault(entry.section or "", []).append(Item(txt(*parts), checkbox=True))
    blocks: list[Para | Items] = []
    for title, items in groups.items():
        if title:
            blocks.append(Para(txt(Strong(title))))
        blocks.append(Items(items))
    return Section("checklist", "Pre-deployment checklist", list(blocks))


def _timeline(plan: Plan) -> Section:
    tl = build_timeline(list(plan.phases))
    note = Para(
        txt(
            "Planned times from the phase estimates; T-0:00 is the start of the first phase. ",
            f"Total {format_duration(plan.total_estimate())}, ",
            f"downtime {format_duration(plan.downtime_estimate())}.",
        )
    )
    return Section(
        "timeline", "Timeline", [Pre("\n".join(tl.lines()), kind="t-timeline"), Chart(tl), note]
    )


_ON_FAILURE = {
    "rollback": "roll back (this phase and every earlier one)",
    "pause": "pause for a person to decide",
    "continue": "continue with the next phase",
}


def _phase(plan: Plan, number: int, phase: Phase) -> Section:
    fields: list[tuple[str, Text]] = [
        ("Estimate", txt(dur(phase.estimate))),
        ("Downtime", txt("yes" if phase.downtime else "no")),
        ("Risk", txt(risk_label(phase.risk))),
        ("Owner", who(plan, phase.owner)),
        ("On failure", txt(_ON_FAILURE[phase.on_failure])),
    ]
    if phase.after is not None:
        prev = f"phase {number - 1}" if number > 1 else "the deploy starts"
        fields.append(("Starts", txt(f"{format_duration(phase.after)} after {prev}")))
    if phase.script:
        fields.append(("Replaces script", txt(Code(phase.script))))
    blocks: list[Para | Fields | Items | Table] = []
    if phase.description:
        blocks.append(Para(txt(phase.description.strip())))
    blocks.append(Fields(fields))
    if phase.steps:
        blocks.append(Para(txt(Strong("Tasks:"))))
        blocks.append(Items([step_item(plan, s) for s in phase.steps], ordered=True))
    if phase.verify:
        blocks.append(Para(txt(Strong("Verify:"))))
        blocks.append(Table(CHECK_HEADERS, check_rows(plan, phase.verify)))
    if phase.rollback:
        blocks.append(Para(txt(Strong("Rollback:"))))
        blocks.append(Items([step_item(plan, s) for s in phase.rollback], ordered=True))
    undo: list[Item] = []
    for s in reversed(phase.steps):
        undo += [Item(txt(step_line(plan, u), f" (undoes “{step_label(s)}”)")) for u in s.undo]
        auto = automatic_compensation(s)
        if auto is not None:
            undo.append(Item(txt(auto, f" (automatic, compensates “{step_label(s)}”)")))
    if undo:
        blocks.append(Para(txt(Strong("Undo (compensations, newest first):"))))
        blocks.append(Items(undo, ordered=True))
    if phase.notes:
        blocks.append(Para(txt(Strong("Notes:"), " ", phase.notes.strip())))
    title = phase_title(number, phase.name)
    return Section(f"phase-{number}", title, list(blocks), page_break=True)


def _rollback(plan: Plan) -> Section | None:
    rows: list[list[Text]] = []
    for number in range(len(plan.phases), 0, -1):
        phase = plan.phases[number - 1]
        for action, does, why in _compensations(phase):
            rows.append(
                [
                    txt(str(len(rows) + 1)),
                    txt(phase_title(number, phase.name)),
                    action,
                    does,
                    txt(why),
                ]
            )
    if not rows:
        return None
    maint = plan.maintenance is not None or any(
        isinstance(s, MaintenanceStep) for p in plan.phases for s in p.steps
    )
    intro = Para(
        txt(
            "On a full rollback the engine undoes the phases that ran, newest first. Within a "
            "phase it runs the phase's rollback steps, then the undo of each of its steps, "
            "newest first, with the automatic compensations of maintenance, migrate, release "
            "and traffic steps. Phases that have not started are skipped.",
            " Maintenance mode is turned off at the end if it is still on." if maint else None,
        )
    )
    table = Table(["#", "Phase", "Action", "What it does", "Why"], rows)
    return Section("rollback", "Full rollback procedure", [intro, table], page_break=True)


def _rollback_triggers(plan: Plan) -> Section | None:
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


def _success_metrics(plan: Plan) -> Section | None:
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


def _watch(plan: Plan) -> Section | None:
    watch = plan.watch
    if watch is None or not (watch.schedule or watch.notes):
        return None
    rows: list[list[Text]] = []
    for i, p in enumerate(watch.schedule):
        if p.start:
            start = f"{format_duration(p.start)} after the deploy"
        elif p.start is not None:
            start = "end of the deploy"
        else:
            start = "end of the deploy" if i == 0 else "after the previous period"
        names = ", ".join(named_check(plan, c)[0] for c in p.checks) or "-"
        rows.append(
            [
                txt(p.label or f"Period {i + 1}"),
                txt(start),
                txt(f"every {format_duration(p.every)}"),
                txt(f"for {format_duration(p.for_)}"),
                txt(names),
            ]
        )
    blocks: list[Table | Fields | Items] = []
    if rows:
        blocks.append(Table(["Period", "Starts", "Every", "For", "Checks"], rows))
    action = {
        "rollback": "roll back",
        "operation": f"run the operation {watch.operation}",
    }.get(watch.on_critical, "notify")
    on_warn = "notify" if watch.on_warn == "notify" else "nothing (ignored)"
    blocks.append(Fields([("On CRITICAL", txt(action)), ("On WARN", txt(on_warn))]))
    if watch.notes:
        blocks.append(Items([Item(txt(n)) for n in watch.notes]))
    return Section("watch", "Watch schedule", list(blocks))


def _alerts(plan: Plan) -> Section | None:
    seen: dict[str, list[Text]] = {}
    for site in iter_check_sites(plan):
        name, check = named_check(plan, site.check)
        if name in seen or check is None or (check.warn is None and check.critical is None):
            continue
        expect, warn, critical = levels(check)
        seen[name] = [txt(name), check_source(check), txt(expect), txt(warn), txt(critical)]
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


def _communication(plan: Plan) -> Section | None:
    chans = plan.notifications.channels
    rows: list[list[Text]] = []
    for rule in plan.notifications.rules:
        names = rule.channels or list(chans)
        channels = ", ".join(f"{n} ({chans[n].kind})" if n in chans else n for n in names)
        audiences = (
            [rule.audience] if rule.audience else [chans[n].audience for n in names if n in chans]
        )
        audience = ", ".join(a for a in audiences if a) or "-"
        message = one_line(rule.message, 300) if rule.message else "(standard message)"
        rows.append([txt(_when(rule)), txt(channels or "-"), txt(audience), txt(message)])
    if not rows:
        return None
    table = Table(["When", "Channels", "Audience", "Message"], rows)
    return Section("communication", "Communication plan", [table])


def _roles(plan: Plan) -> Section | None:
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


def _approvals(plan: Plan) -> Section | None:
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


def _sign_off(plan: Plan) -> Section | None:
    roles = list(plan.approvals.required) or list(plan.roles)
    if not roles:
        return None
    rows = [[txt(Strong(r)), txt(), txt(), txt()] for r in roles]
    return Section(
        "sign-off", "Approval sign-off", [Table(["Role", "Name", "Signature", "Date"], rows)]
    )


def build_runbook(plan: Plan, plan_file: str | None = None) -> Runbook:
    """The whole runbook as a neutral document, sections in reading order. ``plan_file`` is
    how commands in the quick reference name the plan (default ``<name>.yaml``)."""
    plan_file = plan_file or f"{plan.name}.yaml"
    phases = [_phase(plan, i, p) for i, p in enumerate(plan.phases, 1)]
    deploy = Section(
        "phases", "Deployment phases", [Para(txt(f"{len(phases)} phases, run in order."))], phases
    )
    candidates = [
        _overview(plan),
        _summary(plan),
        ops.quick_reference(plan, plan_file),
        _checklist(plan),
        _approvals(plan),
        _roles(plan),
        _timeline(plan),
        deploy,
        _rollback(plan),
        _rollback_triggers(plan),
        _success_metrics(plan),
        _watch(plan),
        _alerts(plan),
        _communication(plan),
        ops.risks(plan),
        ops.contacts(plan),
        ops.health(plan),
        ops.common_operations(plan, plan_file),
        ops.emergency_procedures(plan, plan_file),
        ops.troubleshooting(plan),
        ops.maintenance_windows(plan),
        _sign_off(plan),
    ]
    subtitle = f"Production deployment plan — {plan.environment}"
    if plan.version:
        subtitle += f", version {plan.version}"
    return Runbook(plan.name, subtitle, [s for s in candidates if s is not None])
