"""Notifications: channels a rule or step names, message templates, ``to_roles``, and rules
that would never fire (a window rule without a window, ``approval_needed`` with nothing to
approve, ``watch_*`` with nothing to watch); a channel nothing sends to is a warning."""

from __future__ import annotations

from tminus.plan._validate_base import _Collector
from tminus.plan.interpolate import BUILTIN_VARIABLES
from tminus.plan.model import Plan
from tminus.plan.steps import ApproveStep, BlueGreenStep, CanaryStep, NotifyStep
from tminus.plan.walk import StepSite, iter_steps

__all__ = ["_notifications"]

_WINDOW_RULES = ("before_window", "window_start", "during")


def _notifications(plan: Plan, c: _Collector) -> None:
    channels = set(plan.notifications.channels)
    for i, rule in enumerate(plan.notifications.rules):
        for k, ch in enumerate(rule.channels):
            if ch not in channels:
                c.undefined(
                    "channel",
                    ch,
                    ("notifications", "rules", i, "channels", k),
                    channels,
                    "notifications.channels",
                )
    steps = list(iter_steps(plan))
    for site in steps:
        for k, ch in enumerate(getattr(site.step, "channels", []) or []):
            if ch not in channels:
                c.undefined(
                    "channel", ch, (*site.path, "channels", k), channels, "notifications.channels"
                )
    _templates(plan, c)
    _roles(plan, c)
    _never_fire(plan, c, steps)
    _unused(plan, c, steps)


def _templates(plan: Plan, c: _Collector) -> None:
    from tminus.plan.message_template import is_template, template_problems

    names = [*plan.variables, *BUILTIN_VARIABLES]
    for i, rule in enumerate(plan.notifications.rules):
        if rule.message is None or not is_template(rule.message):
            continue
        for message, hint in template_problems(rule.message, names):
            c.add("error", "bad-template", message, ("notifications", "rules", i, "message"), hint)


def _roles(plan: Plan, c: _Collector) -> None:
    for name, ch in plan.notifications.channels.items():
        for k, role in enumerate(ch.to_roles):
            path = ("notifications", "channels", name, "to_roles", k)
            if role not in plan.roles:
                c.undefined("role", role, path, plan.roles, "roles")
                continue
            contact = plan.roles[role].contact
            if not contact or "@" not in contact or " " in contact.strip():
                shown = f"'{contact}'" if contact else "none"
                c.add(
                    "error",
                    "role-without-email",
                    f"role '{role}' has no email address to send to (its contact: {shown})",
                    path,
                    f"give roles.{role}.contact an email address, or list the address in 'to'",
                )


def _never_fire(plan: Plan, c: _Collector, steps: list[StepSite]) -> None:
    has_window = "window" in plan.model_fields_set
    approvals = bool(plan.approvals.required) or any(isinstance(s.step, ApproveStep) for s in steps)
    watch = plan.watch is not None and bool(plan.watch.schedule)
    warns = (
        (watch and plan.watch is not None and plan.watch.on_warn == "notify")
        or any(p.verify for p in plan.phases)
        or any(isinstance(s.step, CanaryStep | BlueGreenStep) for s in steps)
    )
    for i, rule in enumerate(plan.notifications.rules):
        path = ("notifications", "rules", i, "when")
        why: tuple[str, str] | None = None
        if rule.when in _WINDOW_RULES and not has_window:
            why = (
                "the plan has no window",
                "add a 'window:' (start may be TBD: `tminus schedule --at` sets T-0), or drop "
                "the rule",
            )
        elif rule.when == "approval_needed" and not approvals:
            why = (
                "the plan asks for no approval (no approvals.required, no 'approve' step)",
                "add approvals.required or an 'approve' step, or drop the rule",
            )
        elif rule.when == "watch_critical" and not watch:
            why = ("the plan has no watch", "add a 'watch:' with a schedule, or drop the rule")
        elif rule.when == "watch_warn" and not warns:
            why = (
                "nothing can report a WARN: no watch that notifies, no phase 'verify', no "
                "canary or blue_green step",
                "add a 'watch:' (on_warn: notify), or drop the rule",
            )
        if why is not None:
            c.add(
                "error",
                "rule-never-fires",
                f"a '{rule.when}' rule would never fire: {why[0]}",
                path,
                why[1],
            )


def _unused(plan: Plan, c: _Collector, steps: list[StepSite]) -> None:
    rules = plan.notifications.rules
    notify = [s.step for s in steps if isinstance(s.step, NotifyStep)]
    if any(not r.channels for r in rules) or any(not n.channels for n in notify):
        return  # a rule or step without channels sends to all of them
    used = {ch for r in rules for ch in r.channels} | {ch for n in notify for ch in n.channels}
    for name in plan.notifications.channels:
        if name not in used:
            c.add(
                "warning",
                "unused-channel",
                f"no rule and no notify step sends to channel '{name}'",
                ("notifications", "channels", name),
                "name it in a rule's or a notify step's 'channels', or drop it",
                key=True,
            )
