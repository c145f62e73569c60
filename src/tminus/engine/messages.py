"""The text of a notification: a rule's ``message`` template (or the default for its ``when``)
rendered with the message's variables, every value masked before the template sees it.

The names and the sandbox are :mod:`tminus.plan.message_template` (``tminus check`` reads
them too); this module makes the values (:func:`variables`) and renders (:func:`text_for`).
Every value passes the resolver's masking *before* it reaches the template, so no filter
(``|upper``, ``|reverse``, slicing) can turn a secret into something the mask would miss;
the rendered text is masked once more.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.plan.message_template import is_template, render
from tminus.plan.values import format_duration

if TYPE_CHECKING:
    from tminus.plan.interpolate import Resolver
    from tminus.plan.model import Plan

__all__ = ["DEFAULTS", "TIMED", "engine_context", "reason_of", "text_for", "variables"]

#: The text of a rule without ``message``, per ``when``.
DEFAULTS: dict[str, str] = {
    "before_window": (
        "{{ occurrence }}: {{ deploy.plan }} ({{ deploy.environment }}) starts"
        "{% if window.start %} at {{ window.start }}{% endif %}"
        "{% if window.end %}; the window ends at {{ window.end }}{% endif %}."
    ),
    "window_start": (
        "The window of {{ deploy.plan }} ({{ deploy.environment }}) opens now"
        "{% if window.end %}; it ends at {{ window.end }}{% endif %}"
        "{% if eta %}; expected done by {{ eta }}{% endif %}."
    ),
    "phase_start": (
        "{{ deploy.plan }} ({{ deploy.environment }}): phase {{ phase.number }}/{{ phase.of }} "
        "'{{ phase.name }}' started{% if eta %}; expected done by {{ eta }}{% endif %}."
    ),
    "phase_end": (
        "{{ deploy.plan }} ({{ deploy.environment }}): phase {{ phase.number }}/{{ phase.of }} "
        "'{{ phase.name }}' completed"
        "{% if downtime_so_far %}; downtime so far {{ downtime_so_far }}{% endif %}."
    ),
    "during": (
        "{{ occurrence }}: {{ deploy.plan }} ({{ deploy.environment }}) is {{ deploy.state }}"
        "{% if phase.name %}, phase {{ phase.number }}/{{ phase.of }} '{{ phase.name }}'"
        "{% endif %}{% if eta %}; expected done by {{ eta }}{% endif %}"
        "{% if downtime_so_far %}; downtime so far {{ downtime_so_far }}{% endif %}."
    ),
    "success": (
        "{{ deploy.plan }} ({{ deploy.environment }}) succeeded: deploy {{ deploy.id }}"
        "{% if started_by %}, started by {{ started_by }}{% endif %}"
        "{% if downtime_so_far %}; downtime {{ downtime_so_far }}{% endif %}."
    ),
    "after_success": (
        "{{ occurrence }}: {{ deploy.plan }} ({{ deploy.environment }}) succeeded; watching."
    ),
    "failure": (
        "{{ deploy.plan }} ({{ deploy.environment }}) failed"
        "{% if reason %}: {{ reason }}{% elif failed_step %} at '{{ failed_step }}'{% endif %}."
    ),
    "rollback": (
        "{{ deploy.plan }} ({{ deploy.environment }}) is rolling back"
        "{% if reason %}: {{ reason }}{% endif %}."
    ),
    "approval_needed": (
        "{{ deploy.plan }} ({{ deploy.environment }}) waits for an approval"
        "{% if reason %}: {{ reason }}{% endif %} (deploy {{ deploy.id }})."
    ),
    "paused": (
        "{{ deploy.plan }} ({{ deploy.environment }}) paused"
        "{% if reason %}: {{ reason }}{% endif %} (tminus resume {{ deploy.id }})."
    ),
    "watch_warn": "{{ deploy.plan }} ({{ deploy.environment }}) watch WARN: {{ reason }}",
    "watch_critical": "{{ deploy.plan }} ({{ deploy.environment }}) watch CRITICAL: {{ reason }}",
}

#: Rules fired by a timer (``tminus serve``): their caller's text is not a reason.
TIMED = ("before_window", "window_start", "during", "after_success")


def reason_of(deploy_id: str, when: str, text: str) -> str:
    """The reason in the engine's text for an event (``d-1 paused: X`` → ``X``)."""
    if when in TIMED:
        return ""
    for prefix in (
        f"{deploy_id} paused: ",
        f"{deploy_id} is rolling back: ",
        f"{deploy_id}: ",
    ):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return "" if when in ("success",) else text


def _zone(plan: Plan) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(plan.window.timezone)


def _at(plan: Plan, value: datetime | str | None) -> str:
    """A time in the window's time zone, ``2026-12-06 19:00 CET``."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=_zone(plan))
    return f"{value.astimezone(_zone(plan)):%Y-%m-%d %H:%M %Z}"


def _window(plan: Plan, facts: Mapping[str, str]) -> dict[str, str]:
    start: datetime | str | None = facts.get("window_start") or plan.window.start
    end: datetime | str | None = facts.get("window_end")
    if not end and isinstance(start, datetime) and plan.window.duration is not None:
        first = start if start.tzinfo is not None else start.replace(tzinfo=_zone(plan))
        end = first + plan.window.duration
    return {"start": _at(plan, start), "end": _at(plan, end), "timezone": plan.window.timezone}


def variables(
    plan: Plan,
    deploy_id: str,
    when: str,
    *,
    occurrence: str,
    resolver: Resolver,
    text: str = "",
    state: str | None = None,
    phase: str | None = None,
    facts: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables of a message (see docs/notifications.md#message-templates); ``context``
    (from the engine: eta, downtime so far, failed step, who started it) overrides."""
    facts = facts or {}
    idx = plan.phase_index(phase) if phase else None
    out: dict[str, Any] = {
        "deploy": {
            "id": deploy_id,
            "plan": plan.name,
            "environment": plan.environment,
            "state": state or "",
            "link": "",
            "version": plan.version or "",
        },
        "phase": {
            "name": phase or "",
            "number": (idx + 1) if idx is not None else "",
            "of": len(plan.phases),
        },
        "window": _window(plan, facts),
        "eta": "",
        "downtime_so_far": "",
        "failed_step": "",
        "reason": reason_of(deploy_id, when, text),
        "started_by": str(resolver.variables.get("operator") or ""),
        "when": when,
        "occurrence": shown_occurrence(plan, when, occurrence),
        "vars": {k: v for k, v in resolver.variables.items()},
    }
    for key, value in (context or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    masked: dict[str, Any] = _masked(out, resolver)
    return masked


def shown_occurrence(plan: Plan, when: str, occurrence: str) -> str:
    """The occurrence as people say it: ``T-24h``, ``T-0``, ``T+1h``, ``success+1h`` for a
    timer's key (``notice:0:…``, ``during:2:3``), else as given (``1``, ``phase.0``)."""
    kind, _, rest = occurrence.partition(":")
    index, _, more = rest.partition(":")
    if not index.isdigit() or int(index) >= len(plan.notifications.rules):
        return occurrence
    rule = plan.notifications.rules[int(index)]
    if kind == "notice" and rule.before is not None:
        return f"T-{format_duration(rule.before)}"
    if kind == "window_start":
        return "T-0"
    if kind == "during" and rule.every is not None and more.isdigit():
        return f"T+{format_duration(int(more) * rule.every)}"
    if kind == "after_success" and rule.after is not None:
        return f"success+{format_duration(rule.after)}"
    return occurrence


def _masked(value: Any, resolver: Resolver) -> Any:
    if isinstance(value, Mapping):
        return {k: _masked(v, resolver) for k, v in value.items()}
    if isinstance(value, bool | int | float):
        return value
    if value is None:
        return ""
    return resolver.mask(str(value))


def text_for(template: str | None, when: str, values: Mapping[str, Any], resolver: Resolver) -> str:
    """The message's text: ``template`` (or the default for ``when``) rendered with
    ``values``; ``${…}`` resolved and masked one by one. A template that cannot be rendered
    (``tminus check`` catches most) is sent as written, masked, with the error."""
    source = template if template else DEFAULTS.get(when, "{{ reason }}")

    def ref(reference: str) -> str:
        try:
            return resolver.mask(resolver.resolve(reference))
        except Exception:  # shown as written when it cannot be resolved
            return reference

    if not is_template(source):
        from tminus.plan.message_template import _split_refs

        plain, refs = _split_refs(source, ref)
        for name, value in refs.items():
            plain = plain.replace("{{ " + name + " }}", value)
        return resolver.mask(plain)
    try:
        return resolver.mask(render(source, values, ref))
    except Exception as exc:
        return resolver.mask(f"{source} (template error: {type(exc).__name__}: {exc})")


def engine_context(
    plan: Plan, phase_rows: Mapping[int, Mapping[str, Any]], steps: Mapping[str, Any], who: str
) -> dict[str, Any]:
    """What only the runner knows: ETA (now + the estimates of the window's phases not done),
    downtime so far (the time spent in downtime phases), the failed step, who started it."""
    at = now()
    left = timedelta()
    downtime = timedelta()
    in_window = plan.in_window_phases()
    for i, p in enumerate(in_window):
        row = phase_rows.get(i)
        started, ended = (row or {}).get("started_at"), (row or {}).get("ended_at")
        if p.downtime and started is not None:
            downtime += (ended or at) - started
        if ended is None and p.estimate is not None:
            spent = (at - started) if started is not None else timedelta()
            left += max(p.estimate - spent, timedelta())
    failed = [r for r in steps.values() if r.get("state") == "failed"]
    failed.sort(key=lambda r: str(r.get("ended_at") or r.get("started_at") or ""))
    out: dict[str, Any] = {
        "eta": _at(plan, at + left) if left else "",
        "downtime_so_far": format_duration(downtime) if downtime else "",
        "failed_step": str(failed[-1].get("title") or "") if failed else "",
    }
    if who:
        out["started_by"] = who
    return out
