"""The parts of the runbook made for the bridge: the one-page summary on top, tasks and items
with tick boxes and "done at / by" columns, the timeline of everything time-based with real
times, the manual fallback of each phase and its partial rollback."""

from __future__ import annotations

from datetime import timedelta

from tminus.plan._render_parts import dur, named_check, risk_label, step_label, who
from tminus.plan._runbook import (
    Block,
    Fields,
    Item,
    Items,
    Para,
    Pre,
    Section,
    Strong,
    Table,
    Text,
    automatic_compensation,
    condition_text,
    nested_steps,
    one_line,
    phase_title,
    plain,
    summarize_step,
    txt,
)
from tminus.plan._runbook_fallback import auto_undo_fallback, fallback, numbered
from tminus.plan._runbook_timeline import Timeline
from tminus.plan._runbook_times import Clock, moments
from tminus.plan.model import Phase, Plan
from tminus.plan.steps import StepBase
from tminus.plan.values import format_duration

__all__ = [
    "BOX",
    "DONE",
    "bridge_summary",
    "checklist_table",
    "partial_rollback",
    "phase_fallback",
    "tasks_table",
    "timeline_table",
]

#: The tick box printed in front of every task and item.
BOX = "☐"
#: The columns an operator fills in on paper.
DONE = ["Done at", "By"]


def _boxed(headers: list[str], rows: list[list[Text]]) -> Table:
    return Table(
        ["", *headers, *DONE],
        [[txt(BOX), *r, txt(), txt()] for r in rows],
        kind="tasks",
    )


def tasks_table(plan: Plan, steps: list[StepBase], compact: bool) -> Table:
    rows: list[list[Text]] = []
    for n, step in enumerate(steps, 1):
        what = summarize_step(step)
        if compact:  # the task's name says what to tick; the command is a glance
            what = txt(one_line(plain(what), 90))
        extra: list[Text] = []
        for role, inner in [] if compact else nested_steps(step):
            named = txt(Strong(inner.title()), " — ") if inner.name or inner.id else None
            extra.append(txt("; ", role, ": ", named, summarize_step(inner)))
        if step.description and not compact:
            extra.insert(0, txt(" — ", one_line(step.description, 200)))
        meta = [f"~{format_duration(step.estimate)}" if step.estimate else ""]
        meta.append(step.owner or "")
        rows.append(
            [
                txt(str(n)),
                txt(Strong(step.title()) if (step.name or step.id) else step_label(step)),
                txt(what, *extra),
                txt(", ".join(m for m in meta if m) or "-"),
            ]
        )
    return _boxed(["#", "Task", "What it does", "Est., owner"], rows)


def phase_fallback(plan: Plan, phase: Phase) -> Pre | None:
    """Each task's commands by hand (the fallback), after the task's number; tasks whose row
    already says what to do by hand (wait for a check, sign off, notify, a command printed
    whole) are left out."""
    entries = [
        (n, fallback(plan, s, all_kinds=False, shown=plain(summarize_step(s))))
        for n, s in enumerate(phase.steps, 1)
    ]
    if not any(cmds for _, cmds in entries):
        return None
    return Pre(numbered(entries), kind="fallback")


def partial_rollback(plan: Plan, number: int, phase: Phase, compact: bool = False) -> list[Block]:
    """The phase's partial rollback: the tminus command, its actions in the engine's order and
    their manual equivalent after each action's number (not in the compact runbook)."""
    actions: list[tuple[Text, list[str]]] = [
        (txt(step.title()), fallback(plan, step, all_kinds=False)) for step in phase.rollback
    ]
    for step in reversed(phase.steps):
        actions += [
            (txt(u.title(), f" (undoes “{step_label(step)}”)"), fallback(plan, u, all_kinds=False))
            for u in step.undo
        ]
        auto = automatic_compensation(step)
        if auto is not None:
            actions.append(
                (
                    txt(auto, f" (automatic, for “{step_label(step)}”)"),
                    auto_undo_fallback(plan, step),
                )
            )
        elif manual := auto_undo_fallback(plan, step):  # an undo by hand only
            actions.append((txt(f"undo “{step_label(step)}” by hand"), manual))
    if not actions:
        return [Para(txt(Strong("Partial rollback: "), "nothing to undo in this phase."))]
    blocks: list[Block] = [
        Para(txt(Strong("Partial rollback of this phase only:"))),
        Pre(f'tminus rollback DEPLOY --phase {number}   # "{phase.name}"'),
        Items([Item(a) for a, _ in actions], ordered=True),
    ]
    entries = [(n, cmds) for n, (_, cmds) in enumerate(actions, 1)]
    if not compact and any(cmds for _, cmds in entries):
        blocks.append(
            Para(
                txt(
                    Strong("Manual fallback"),
                    " (if tminus is unavailable; each command after its action's number):",
                )
            )
        )
        blocks.append(Pre(numbered(entries), kind="fallback"))
    return blocks


def checklist_table(plan: Plan) -> Table | None:
    if not plan.checklist:
        return None
    rows: list[list[Text]] = []
    for entry in plan.checklist:
        if entry.check is None:
            how = txt("confirm by hand")
        else:
            name, check = named_check(plan, entry.check)
            how = txt("automated: ", Strong(name), f" ({condition_text(check)})" if check else "")
        section = txt(entry.section, ": ") if entry.section else None
        rows.append([txt(section, entry.item), who(plan, entry.owner), how])
    return _boxed(["Item", "Owner", "How"], rows)


def timeline_table(plan: Plan, timeline: Timeline, clock: Clock | None) -> Table:
    """Notices, window, phases, updates and the watch: one row each, in time order."""
    headers = ["T", *(clock.headers() if clock else []), "What"]
    rows: list[list[Text]] = []
    for m in moments(plan, timeline):
        times = [txt(c) for c in clock.cells(m.at)] if clock else []
        rows.append([txt(m.mark), *times, txt(m.what)])
    return _boxed(headers, rows)


def _window_text(plan: Plan, clock: Clock | None) -> str:
    w = plan.window
    if clock is None:
        return f"not scheduled yet (TBD, {w.timezone}); length {dur(w.duration)}"
    start = clock.at(timedelta())
    end = f" – {clock.at(w.duration)}" if w.duration else ""
    second = ""
    if clock.second is not None:
        second = f" ({clock.at(timedelta(), clock.second)} {clock.second.key})"
    return f"{start}{end} {clock.zone.key}{second}"


def bridge_summary(plan: Plan, timeline: Timeline, clock: Clock | None) -> Section:
    """One page: window, downtime, phases, go/no-go, rollback triggers, who to call."""
    w = plan.window
    fields: list[tuple[str, Text]] = [
        ("Window", txt(_window_text(plan, clock))),
        (
            "Downtime",
            txt(
                f"planned {format_duration(plan.downtime_estimate())}, "
                f"allowed {dur(w.max_downtime)}"
            ),
        ),
        ("Duration", txt(f"{format_duration(plan.total_estimate())} of estimates")),
        ("Risk", txt(risk_label(plan.risk))),
    ]
    if w.on_overrun != "pause":
        fields.append(("If the window overruns", txt(w.on_overrun)))
    blocks: list[Block] = [Fields(fields)]
    phase_rows: list[list[Text]] = []
    ends: dict[int, timedelta] = {}
    starts: dict[int, timedelta] = {}
    for r in timeline.rows:  # "Phase N Start (…)" / "Phase N Complete (…)"
        n_text, _, rest = r.text.removeprefix("Phase ").partition(" ")
        if n_text.isdigit():
            (starts if rest.startswith("Start") else ends)[int(n_text)] = r.at
    for n, (phase, bar) in enumerate(zip(plan.phases, timeline.bars, strict=False), 1):
        start_at = bar.start_mark
        at = starts.get(n, ends.get(n - 1))
        if clock is not None and at is not None:
            start_at += f" ({clock.at(at)})"
        phase_rows.append(
            [
                txt(phase_title(n, phase.name)),
                txt(start_at),
                txt(dur(phase.estimate)),
                txt("yes" if phase.downtime else "no"),
                who(plan, phase.owner),
            ]
        )
    blocks.append(Table(["Phase", "Starts", "Estimate", "Downtime", "Owner"], phase_rows))
    go: list[Item] = []
    for entry in plan.checklist:
        how = "automated" if entry.check is not None else "by hand"
        go.append(Item(txt(entry.item, f" ({how})"), checkbox=True))
    if plan.approvals.required:
        go.append(Item(txt("Approved by ", ", ".join(plan.approvals.required)), checkbox=True))
    if go:
        blocks += [Para(txt(Strong("Go / no-go:"))), Items(go)]
    triggers: list[Item] = []
    for t in plan.rollback_triggers:
        if t.check is None:
            triggers.append(Item(txt(Strong(t.name), f" (judged by a person) → {t.action}")))
            continue
        name, check = named_check(plan, t.check)
        triggers.append(
            Item(txt(Strong(t.name), f": {name} — {condition_text(check) or '-'} → {t.action}"))
        )
    if triggers:
        blocks += [Para(txt(Strong("Rollback triggers:"))), Items(triggers)]
    call: list[Item] = []
    for name, role in plan.roles.items():
        if role.on_call or role.contact:
            people = ", ".join(role.people) or "-"
            call.append(
                Item(
                    txt(
                        Strong(name),
                        f": {people}",
                        f" — {role.contact}" if role.contact and role.contact != people else None,
                    )
                )
            )
    for c in plan.contacts.emergency:
        call.append(
            Item(
                txt(
                    Strong(c.name),
                    f" ({c.role})" if c.role else None,
                    f": {c.contact}" if c.contact else None,
                )
            )
        )
    if plan.contacts.escalation:
        call.append(Item(txt("Escalation: ", " → ".join(plan.contacts.escalation))))
    if call:
        blocks += [Para(txt(Strong("Who to call:"))), Items(call)]
    return Section("bridge-summary", "On one page", blocks, page_break=False, page_after=True)
