"""What the public status page shows: the plans that make something public, and a view of
each environment's maintenances built from the store (``store/status.py``) with nothing more.

The page is public and read-only, with no authentication: it shows **only what the plan marks
public**.
A message is public when its rule says ``audience: public``, or when the rule names no
audience and the channel it went to does (``channels: {status: {audience: public}}``), as the
runbook resolves it. A deploy appears only when its plan has at least one such rule, and then
with no more than:

- its plan's name and environment, and its state in plain words (:data:`STATUS`);
- its window (T-0 of ``tminus schedule``, else the plan's ``window.start``, to + ``duration``)
  in the window's time zone;
- the public messages recorded in the outbox for it, with their times: the rule's own
  ``message:`` as recorded (masked like every message), or, for a rule without one, a generic
  line of this module (:data:`GENERIC`), never tminus's internal default text (it names steps
  and errors);
- a note on how it ended (completed, rolled back: an incident, called off).

Never step names, hosts, commands, errors, variables, people, the deploy's id, nor a ``notify``
step's message. Deploys not ended, and those that ended in the last :data:`HISTORY`, are shown.

The forms (HTML, JSON, Atom) and the HTTP handlers are :mod:`tminus.serve.status_page`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from tminus.clock import now
from tminus.states import DeployState

if TYPE_CHECKING:
    from tminus.plan.model import Plan

__all__ = [
    "GENERIC",
    "HISTORY",
    "PUBLIC",
    "STATUS",
    "EnvironmentView",
    "Maintenance",
    "PlanFacts",
    "StatusStore",
    "public_view",
]

PUBLIC = "public"
#: The version of the JSON form; a renamed, removed or retyped field makes version 2.
SCHEMA = "tminus.status/1"
#: How long an ended deploy stays on the page.
HISTORY = timedelta(days=7)
MAX_AGE_S = 30
#: A deploy's state in plain words: (code, label, note).
STATUS: dict[str, tuple[str, str, str]] = {
    "scheduled": ("scheduled", "Scheduled maintenance", "Maintenance is scheduled."),
    "in_progress": ("in_progress", "In progress", "The maintenance is in progress."),
    "rolling_back": (
        "rolling_back",
        "Rolling back — incident",
        "The maintenance ran into a problem; its changes are being rolled back.",
    ),
    "completed": ("completed", "Completed", "The maintenance is complete."),
    "rolled_back": (
        "rolled_back",
        "Rolled back — incident",
        "The maintenance did not complete as planned; its changes were rolled back.",
    ),
    "incident": (
        "incident",
        "Incident — not completed",
        "The maintenance did not complete as planned.",
    ),
    "cancelled": ("cancelled", "Cancelled", "The maintenance was called off."),
}
_BY_STATE = {
    DeployState.SCHEDULED: "scheduled",
    DeployState.PENDING: "in_progress",
    DeployState.RUNNING: "in_progress",
    DeployState.AWAITING_CONFIRMATION: "in_progress",
    DeployState.AWAITING_APPROVAL: "in_progress",
    DeployState.PAUSED: "in_progress",
    DeployState.ROLLING_BACK: "rolling_back",
    DeployState.SUCCEEDED: "completed",
    DeployState.ROLLED_BACK: "rolled_back",
    DeployState.FAILED: "incident",
    DeployState.ABORTED: "cancelled",
}
#: A public rule's message when the rule has no ``message:`` of its own: (kind, text).
GENERIC: dict[str, tuple[str, str]] = {
    "before_window": ("notice", "Maintenance is scheduled."),
    "window_start": ("started", "The maintenance has started."),
    "phase_start": ("update", "The maintenance is in progress."),
    "phase_end": ("update", "The maintenance is in progress."),
    "during": ("update", "The maintenance is in progress."),
    "approval_needed": ("on_hold", "The maintenance is on hold."),
    "paused": ("on_hold", "The maintenance is on hold."),
    "success": ("resolved", "The maintenance is complete."),
    "after_success": ("resolved", "The maintenance is complete."),
    "failure": ("incident", "The maintenance ran into a problem."),
    "rollback": ("incident", "The maintenance ran into a problem; its changes are rolled back."),
    "watch_warn": ("update", "The service is being watched closely after the maintenance."),
    "watch_critical": ("incident", "A problem was found after the maintenance."),
}
#: The order of the environment's summary: the first state present wins.
_SUMMARY = (
    ("rolling_back", "incident", "Incident: a maintenance is being rolled back"),
    ("in_progress", "maintenance", "Maintenance in progress"),
    ("scheduled", "scheduled", "Maintenance scheduled"),
)
_NONE = ("none", "No maintenance in progress")
_ENDED = frozenset({"succeeded", "rolled_back", "failed", "aborted"})
ID_SPACE = uuid.UUID("6d1f3b7e-5a8c-4b6e-9f0a-7c2d1e4b5a69")
ENV_MAX = 120


# --- what a plan makes public ---------------------------------------------------------------
@dataclass(frozen=True)
class RuleFacts:
    """One notification rule: its event, the channels on which its messages are public, and
    whether it has a ``message:`` of its own."""

    when: str
    public_on: frozenset[str]
    own_text: bool


@dataclass(frozen=True)
class PlanFacts:
    """What the status page needs of a plan snapshot."""

    name: str
    environment: str
    timezone: str
    start: datetime | None
    duration: timedelta | None
    rules: tuple[RuleFacts, ...]

    @property
    def public(self) -> bool:
        return any(r.public_on for r in self.rules)

    @classmethod
    def of(cls, plan: Plan) -> PlanFacts:
        channels = plan.notifications.channels
        rules = []
        for rule in plan.notifications.rules:
            names = rule.channels or list(channels) or ["log"]
            if rule.audience:  # the rule's audience wins (as in the runbook)
                public_on = frozenset(names) if rule.audience == PUBLIC else frozenset()
            else:
                public_on = frozenset(
                    n for n in names if n in channels and channels[n].audience == PUBLIC
                )
            rules.append(RuleFacts(rule.when, public_on, bool(rule.message)))
        w = plan.window
        start = w.start
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=ZoneInfo(w.timezone))
        return cls(plan.name, plan.environment, w.timezone, start, w.duration, tuple(rules))


class StatusStore(Protocol):
    """The store's reads the page uses (``store/status.py``)."""

    def status_deploys(self, ended_since: datetime, limit: int = 200) -> list[dict[str, Any]]: ...

    def status_messages(self, deploy_ids: list[str]) -> list[dict[str, Any]]: ...

    def plan_text_of(self, deploy_id: str) -> tuple[str, str] | None: ...


#: Plan facts by plan hash (a snapshot never changes): None for a plan that no longer loads.
_FACTS: dict[str, PlanFacts | None] = {}
_FACTS_MAX = 512


def _facts(store: StatusStore, d: dict[str, Any]) -> PlanFacts | None:
    key = str(d["plan_hash"])
    if key in _FACTS:
        return _FACTS[key]
    from tminus.plan.loader import load_plan_text

    got = store.plan_text_of(d["id"])
    facts = None
    if got is not None:
        plan = load_plan_text(got[0], got[1], semantic=False).plan
        facts = PlanFacts.of(plan) if plan is not None else None
    if len(_FACTS) >= _FACTS_MAX:
        _FACTS.clear()
    _FACTS[key] = facts
    return facts


# --- the view -------------------------------------------------------------------------------
def _aware(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _when_text(at: datetime, tz: ZoneInfo) -> str:
    return f"{at.astimezone(tz):%Y-%m-%d %H:%M %Z}"


def _window_text(start: datetime, end: datetime | None, tz: ZoneInfo, zone: str) -> str:
    s = start.astimezone(tz)
    if end is None:
        return f"from {s:%Y-%m-%d %H:%M} {zone}"
    e = end.astimezone(tz)
    if e.date() == s.date():
        return f"{s:%Y-%m-%d %H:%M}–{e:%H:%M} {zone}"
    return f"{s:%Y-%m-%d %H:%M} – {e:%Y-%m-%d %H:%M} {zone}"


@dataclass
class Maintenance:
    """One deploy as the public sees it."""

    ref: str
    plan: str
    environment: str
    status: str
    status_text: str
    note: str
    timezone: str
    window: dict[str, Any] | None
    scheduled_at: datetime | None
    ended_at: datetime | None
    updates: list[dict[str, Any]] = field(default_factory=list)
    order: tuple[int, float] = (0, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.ref,
            "plan": self.plan,
            "environment": self.environment,
            "status": self.status,
            "status_text": self.status_text,
            "note": self.note,
            "window": self.window,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "updates": [
                {"id": u["id"], "at": u["at"].isoformat(), "kind": u["kind"], "text": u["text"]}
                for u in self.updates
            ],
        }


def _status_of(d: dict[str, Any], t0: datetime | None) -> str:
    state = DeployState(d["state"])
    code = _BY_STATE[state]
    if state == DeployState.SCHEDULED:
        due = _aware(d.get("due_at"))
        # Waiting for a delayed phase (``after: 30d``): its window is over and its phases
        # succeeded (the engine delays a phase only after the ones before it succeeded).
        if t0 is None or due is None or abs((due - t0).total_seconds()) > 1:
            code = "completed"
    return code


def _maintenance(d: dict[str, Any], facts: PlanFacts) -> Maintenance:
    t0 = _aware((d.get("t0_data") or {}).get("at"))
    code, label, note = STATUS[_status_of(d, t0)]
    tz = ZoneInfo(facts.timezone)
    start = t0 or facts.start
    window = None
    if start is not None:
        end = start + facts.duration if facts.duration is not None else None
        window = {
            "start": start.astimezone(tz).isoformat(),
            "end": end.astimezone(tz).isoformat() if end is not None else None,
            "timezone": facts.timezone,
            "text": _window_text(start, end, tz, facts.timezone),
        }
    updated = _aware(d.get("updated_at")) or now()
    ended = None
    if d["state"] in _ENDED:
        ended = _aware(d.get("finished_at")) or updated
    ref = str(uuid.uuid5(ID_SPACE, f"deploy:{d['id']}"))
    # Under way first, then the next to come (soonest first), then the newest ended.
    if code in ("in_progress", "rolling_back"):
        order = (0, -(_aware(d.get("created_at")) or updated).timestamp())
    elif code == "scheduled":
        order = (1, start.timestamp() if start else 0.0)
    else:
        order = (2, -(ended or updated).timestamp())
    return Maintenance(
        ref=ref,
        plan=facts.name,
        environment=facts.environment,
        status=code,
        status_text=label,
        note=note,
        timezone=facts.timezone,
        window=window,
        scheduled_at=_aware(d["created_at"]) if t0 is not None else None,
        ended_at=ended,
        order=order,
    )


def _public_update(
    row: dict[str, Any], facts: PlanFacts, tz: ZoneInfo
) -> tuple[str, dict[str, Any]] | None:
    """The update a recorded rule message makes, keyed by its message key; None when it is
    not public."""
    message = row["message"] or {}
    key = str(message.get("key") or "")
    parts = key.split("/", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    when, index = parts[0], int(parts[1])
    if index >= len(facts.rules) or facts.rules[index].when != when:
        return None
    rule = facts.rules[index]
    if row["channel"] not in rule.public_on:
        return None
    kind, generic = GENERIC.get(when, ("update", "Update on the maintenance."))
    text = str(message.get("text") or "") if rule.own_text else generic
    at = _aware(row["created_at"]) or now()
    ref = str(uuid.uuid5(ID_SPACE, f"message:{row['deploy_id']}:{key}"))
    return key, {"id": ref, "at": at, "at_text": _when_text(at, tz), "kind": kind, "text": text}


@dataclass
class EnvironmentView:
    environment: str
    summary: str
    summary_text: str
    maintenances: list[Maintenance]

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "summary": self.summary,
            "summary_text": self.summary_text,
            "maintenances": [m.to_json() for m in self.maintenances],
        }


def public_view(store: StatusStore, environment: str | None = None) -> list[EnvironmentView]:
    """The page's content: every environment with something public (or just ``environment``,
    shown even when empty), sorted by name."""
    deploys = store.status_deploys(now() - HISTORY)
    shown: dict[str, tuple[Maintenance, PlanFacts]] = {}
    for d in deploys:
        if environment is not None and d["environment"] != environment:
            continue
        facts = _facts(store, d)
        if facts is None or not facts.public:
            continue
        shown[d["id"]] = (_maintenance(d, facts), facts)
    seen: set[tuple[str, str]] = set()
    for row in store.status_messages(list(shown)):
        m, facts = shown[row["deploy_id"]]
        got = _public_update(row, facts, ZoneInfo(facts.timezone))
        if got is None or (row["deploy_id"], got[0]) in seen:
            continue
        seen.add((row["deploy_id"], got[0]))
        m.updates.append(got[1])
    by_env: dict[str, list[Maintenance]] = {}
    if environment is not None:
        by_env[environment] = []
    for m, _ in shown.values():
        m.updates.reverse()  # newest first
        by_env.setdefault(m.environment, []).append(m)
    out = []
    for env in sorted(by_env):
        items = sorted(by_env[env], key=lambda m: m.order)
        codes = {m.status for m in items}
        summary, text = next(((s, t) for c, s, t in _SUMMARY if c in codes), _NONE)
        out.append(EnvironmentView(env, summary, text, items))
    return out
