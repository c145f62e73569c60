"""Render a plan as the runbook a team would otherwise write by hand (Markdown, HTML, PDF).

:func:`build_runbook` assembles the neutral document (see :mod:`tminus.plan._runbook`); the
renderers only lay it out. Sections the plan leaves empty are omitted. With
:attr:`RenderOptions.values` (``tminus render`` sets it unless ``--unresolved``) every ``${…}``
is resolved as the dry run resolves it (:mod:`tminus.plan._runbook_values`), secrets shown as
``***``; without it, references are printed as written. Secret-bearing fields (database and
channel URLs, headers, tokens, env values) are never printed either way, and the password
of a URL is masked either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from tminus.plan import _render_ops as ops
from tminus.plan._render_parts import (
    CHECK_HEADERS,
    check_rows,
    dur,
    named_check,
    risk_label,
    step_label,
    who,
)
from tminus.plan._runbook import (
    Block,
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
    one_line,
    phase_title,
    summarize_step,
    txt,
)
from tminus.plan._runbook_bridge import (
    BOX,
    DONE,
    bridge_summary,
    checklist_table,
    partial_rollback,
    phase_fallback,
    tasks_table,
    timeline_table,
)
from tminus.plan._runbook_checks import expectation, threshold
from tminus.plan._runbook_times import Clock, clock_for
from tminus.plan._runbook_values import resolve_runbook
from tminus.plan.interpolate import mask_url_passwords
from tminus.plan.model import NotificationRule, Phase, Plan
from tminus.plan.steps import ApproveStep, MaintenanceStep
from tminus.plan.values import format_duration
from tminus.plan.walk import iter_check_sites

__all__ = ["RenderOptions", "build_runbook", "render_html", "render_markdown", "render_pdf"]


@dataclass(frozen=True)
class RenderOptions:
    """How a runbook is rendered (``tminus render``'s options)."""

    #: Resolves ``${…}`` in every text (secrets as ``***``); None: printed as written.
    values: Callable[[str], str] | None = None
    #: The window's start for this rendering (else ``window.start``): wall-clock times.
    start: datetime | None = None
    #: A second time zone shown beside the window's (``--tz``).
    tz: str | None = None
    #: About a third of the length: the summary, checklist, timeline, tasks with their
    #: checks and partial rollbacks, communication and sign-off; no reference sections.
    compact: bool = False


def render_markdown(
    plan: Plan, plan_file: str | None = None, options: RenderOptions | None = None
) -> str:
    """The runbook as GitHub-flavoured Markdown."""
    from tminus.plan._render_md import to_markdown

    return to_markdown(build_runbook(plan, plan_file, options))


def render_html(
    plan: Plan, plan_file: str | None = None, options: RenderOptions | None = None
) -> str:
    """The runbook as one self-contained HTML file (inline CSS and SVG, prints well)."""
    from tminus.plan._render_html import to_html

    return to_html(build_runbook(plan, plan_file, options))


def render_pdf(
    plan: Plan, plan_file: str | None = None, options: RenderOptions | None = None
) -> bytes:
    """The HTML runbook printed to PDF by headless Chromium (:mod:`tminus.plan._render_pdf`)."""
    from tminus.plan._render_pdf import html_to_pdf

    return html_to_pdf(render_html(plan, plan_file, options))


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
    if plan.window.notes:
        fields.append(("Window notes", txt(one_line(plan.window.notes, 600))))
    blocks: list[Para | Fields] = [Fields(fields)]
    if plan.description:
        blocks.insert(0, Para(txt(plan.description.strip())))
    return Section("overview", "Overview", list(blocks))


def _checklist(plan: Plan) -> Section | None:
    table = checklist_table(plan)
    if table is None:
        return None
    return Section("checklist", "Pre-deployment checklist", [table])


def _timeline(plan: Plan, clock: Clock | None, compact: bool) -> Section:
    tl = build_timeline(list(plan.phases))
    when = (
        f"T-0:00 is the window's start, {clock.at(timedelta())} {clock.zone.key}"
        if clock is not None
        else "T-0:00 is the start of the first phase (the window has no start yet: "
        "`tminus render --start` gives wall-clock times)"
    )
    note = Para(
        txt(
            f"Planned times from the phase estimates; {when}. ",
            f"Total {format_duration(plan.total_estimate())}, ",
            f"downtime {format_duration(plan.downtime_estimate())}.",
        )
    )
    blocks: list[Block] = [note, timeline_table(plan, tl, clock)]
    if not compact:
        width = max((len(r.mark) for r in tl.rows), default=0)
        lines = [
            f"{r.mark:<{width}}  " + (f"{clock.at(r.at)}  " if clock else "") + r.text
            for r in tl.rows
        ]
        blocks += [Pre("\n".join(lines), kind="t-timeline"), Chart(tl)]
    return Section("timeline", "Timeline", blocks)


_ON_FAILURE = {
    "rollback": "roll back (this phase and every earlier one)",
    "pause": "pause for a person to decide",
    "continue": "continue with the next phase",
}


def _phase(plan: Plan, number: int, phase: Phase, clock: Clock | None, compact: bool) -> Section:
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
    if clock is not None:
        rows = [
            r
            for r in build_timeline(list(plan.phases)).rows
            if r.text.startswith(f"Phase {number} ")
        ]
        if rows:
            fields.append(("Planned", txt(" → ".join(f"{r.mark} {clock.at(r.at)}" for r in rows))))
    if phase.script and not compact:
        fields.append(("Replaces script", txt(Code(phase.script))))
    blocks: list[Block] = []
    if phase.description and not compact:
        blocks.append(Para(txt(phase.description.strip())))
    blocks.append(Fields(fields))
    if phase.steps:
        blocks.append(tasks_table(plan, list(phase.steps), compact))
    if phase.verify:
        blocks.append(Para(txt(Strong("Verify:"))))
        table = Table(CHECK_HEADERS, check_rows(plan, phase.verify))
        if compact:  # the check and what passes; where it is measured is in the full runbook
            table = Table(
                [h for i, h in enumerate(table.headers) if i != 1],
                [[c for i, c in enumerate(r) if i != 1] for r in table.rows],
            )
        blocks.append(table)
    if not compact:
        fb = phase_fallback(plan, phase)
        if fb is not None:
            blocks.append(
                Para(
                    txt(
                        Strong("Manual fallback"),
                        " (if tminus is unavailable; not what tminus runs):",
                    )
                )
            )
            blocks.append(fb)
    blocks += partial_rollback(plan, number, phase, compact)
    if phase.notes and not compact:
        blocks.append(Para(txt(Strong("Notes:"), " ", phase.notes.strip())))
    title = phase_title(number, phase.name)
    return Section(f"phase-{number}", title, list(blocks), page_break=not compact)


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
        seen[name] = [
            txt(name),
            check_source(check),
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


def _communication(plan: Plan) -> Section | None:
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


def build_runbook(
    plan: Plan, plan_file: str | None = None, options: RenderOptions | None = None
) -> Runbook:
    """The whole runbook as a neutral document, sections in reading order. ``plan_file`` is
    how commands in the quick reference name the plan (default ``<name>.yaml``). Raises
    ValueError for an unknown ``options.tz``."""
    opts = options or RenderOptions()
    plan_file = plan_file or f"{plan.name}.yaml"
    try:
        clock = clock_for(plan, opts.start, opts.tz)
    except Exception as exc:  # ZoneInfoNotFoundError and the like
        raise ValueError(f"unknown time zone {opts.tz!r}: {exc}") from None
    compact = opts.compact
    phases = [_phase(plan, i, p, clock, compact) for i, p in enumerate(plan.phases, 1)]
    deploy = Section(
        "phases", "Deployment phases", [Para(txt(f"{len(phases)} phases, run in order."))], phases
    )
    summary = bridge_summary(plan, build_timeline(list(plan.phases)), clock)
    if compact:
        candidates = [
            summary,
            _checklist(plan),
            _timeline(plan, clock, compact),
            deploy,
            _success_metrics(plan),
            _communication(plan),
            ops.quick_reference(plan, plan_file),
            _sign_off(plan),
        ]
    else:
        candidates = [
            summary,
            _overview(plan),
            ops.quick_reference(plan, plan_file),
            _checklist(plan),
            _approvals(plan),
            _roles(plan),
            _timeline(plan, clock, compact),
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
    if compact:
        subtitle += " (compact)"
    runbook = Runbook(
        plan.name,
        subtitle,
        [s for s in candidates if s is not None],
        kind="compact" if compact else "",
    )
    if opts.values is None:  # as written; a password written in a URL is still masked
        return resolve_runbook(runbook, mask_url_passwords)
    resolved = resolve_runbook(runbook, opts.values)
    return replace(
        resolved,
        footer="Rendered by tminus from the plan; values resolved as in a dry run, "
        "secrets shown as ***.",
    )
