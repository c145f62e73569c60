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
from tminus.plan import _render_sections as sec
from tminus.plan._render_parts import (
    CHECK_HEADERS,
    SOURCES,
    check_rows,
    dur,
    risk_label,
    step_label,
    who,
)
from tminus.plan._runbook import (
    Block,
    Chart,
    Code,
    Fields,
    Para,
    Pre,
    Runbook,
    Section,
    Strong,
    Table,
    Text,
    automatic_compensation,
    build_timeline,
    one_line,
    phase_title,
    summarize_step,
    txt,
)
from tminus.plan._runbook_bridge import (
    bridge_summary,
    checklist_table,
    partial_rollback,
    phase_fallback,
    tasks_table,
    timeline_table,
)
from tminus.plan._runbook_fallback import RESOLVE
from tminus.plan._runbook_times import Clock, clock_for
from tminus.plan._runbook_values import resolve_runbook
from tminus.plan.interpolate import mask_url_passwords
from tminus.plan.model import Phase, Plan
from tminus.plan.steps import MaintenanceStep
from tminus.plan.values import format_duration

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
    blocks.append(Fields(fields, inline=True))
    if phase.steps:
        blocks.append(tasks_table(plan, list(phase.steps), compact))
    if phase.verify:
        blocks.append(Para(txt(Strong("Verify:"))))
        table = Table(CHECK_HEADERS, check_rows(plan, phase.verify, where=f"phase {number}"))
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
                        " (if tminus is unavailable; not what tminus runs; each command "
                        "after its task's number):",
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
    token = RESOLVE.set(opts.values)  # backup labels from resolved URLs, as the drivers do
    printed = SOURCES.set({})  # a check's source printed once, then "as in phase N"
    try:
        runbook = _build(plan, plan_file, opts, clock)
    finally:
        RESOLVE.reset(token)
        SOURCES.reset(printed)
    if opts.values is None:  # as written; a password written in a URL is still masked
        return resolve_runbook(runbook, mask_url_passwords)
    resolved = resolve_runbook(runbook, opts.values)
    return replace(
        resolved,
        footer="Rendered by tminus from the plan; values resolved as in a dry run, "
        "secrets shown as ***.",
    )


def _build(plan: Plan, plan_file: str, opts: RenderOptions, clock: Clock | None) -> Runbook:
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
            sec.success_metrics(plan),
            sec.communication(plan),
            ops.quick_reference(plan, plan_file),
            sec.sign_off(plan),
        ]
    else:
        candidates = [
            summary,
            _overview(plan),
            ops.quick_reference(plan, plan_file),
            _checklist(plan),
            sec.approvals(plan),
            sec.roles(plan),
            _timeline(plan, clock, compact),
            deploy,
            _rollback(plan),
            sec.rollback_triggers(plan),
            sec.success_metrics(plan),
            sec.watch(plan),
            sec.alerts(plan),
            sec.communication(plan),
            ops.risks(plan),
            ops.contacts(plan),
            ops.health(plan),
            ops.common_operations(plan, plan_file),
            ops.emergency_procedures(plan, plan_file),
            ops.troubleshooting(plan),
            ops.maintenance_windows(plan),
            sec.sign_off(plan),
        ]
    subtitle = f"Production deployment plan — {plan.environment}"
    if plan.version:
        subtitle += f", version {plan.version}"
    if compact:
        subtitle += " (compact)"
    return Runbook(
        plan.name,
        subtitle,
        [s for s in candidates if s is not None],
        kind="compact" if compact else "",
    )
