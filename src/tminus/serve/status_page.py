"""The public status page of ``tminus serve``: ``/status`` (HTML), ``/status.json``,
``/status.atom``, and the same per environment (``/status/ENV``, ``.json``, ``.atom``).

Public and read-only, with no authentication: it shows **only what the plan marks public**.
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

The handlers are coroutines (they run on the server's loop thread, which alone uses its store)
and read the store with two queries (``store/status.py``); a plan's text is read and parsed
only the first time its hash is met. Answers carry ``Cache-Control: public, max-age=30`` and an
``ETag`` (``If-None-Match`` answers 304), and a Content-Security-Policy that allows no script.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tminus.clock import now
from tminus.states import DeployState

if TYPE_CHECKING:
    from jinja2 import Environment

    from tminus.plan.model import Plan

__all__ = [
    "GENERIC",
    "HISTORY",
    "PUBLIC",
    "SCHEMA",
    "STATUS",
    "PlanFacts",
    "public_view",
    "render_atom",
    "render_html",
    "render_json",
    "router",
]

#: The audience that makes a message public.
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
_ID_SPACE = uuid.UUID("6d1f3b7e-5a8c-4b6e-9f0a-7c2d1e4b5a69")
_ENV_MAX = 120


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
    ref = str(uuid.uuid5(_ID_SPACE, f"deploy:{d['id']}"))
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
    ref = str(uuid.uuid5(_ID_SPACE, f"message:{row['deploy_id']}:{key}"))
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


# --- the three forms ------------------------------------------------------------------------
def render_json(view: list[EnvironmentView]) -> bytes:
    body = {
        "schema": SCHEMA,
        "generated_at": now().isoformat(),
        "environments": [e.to_json() for e in view],
    }
    return json.dumps(body, indent=1, ensure_ascii=False).encode()


_TEMPLATES: list[Environment] = []


def _templates() -> Environment:
    if not _TEMPLATES:
        from jinja2 import Environment, PackageLoader, select_autoescape

        _TEMPLATES.append(
            Environment(
                loader=PackageLoader("tminus.serve", "templates"),
                autoescape=select_autoescape(["html"]),
                trim_blocks=True,
                lstrip_blocks=True,
            )
        )
    return _TEMPLATES[0]


def render_html(view: list[EnvironmentView], environment: str | None) -> bytes:
    """The page; its links are relative (``status/prod``, ``prod.json``), so that it works
    behind a proxy that serves it under a prefix."""
    from urllib.parse import quote

    template = _templates().get_template("status.html")
    title = f"Status: {environment}" if environment is not None else "Status"
    text = template.render(
        title=title,
        environment=environment,
        environments=view,
        here=quote(environment, safe="") if environment is not None else "status",
        quote=lambda s: quote(s, safe=""),
        generated=now().astimezone(UTC),
    )
    return text.encode()


_ATOM = "http://www.w3.org/2005/Atom"


def _atom_time(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_atom(view: list[EnvironmentView], feed_url: str, page_url: str, title: str) -> bytes:
    """An Atom feed (RFC 4287): one entry per public update, per scheduled maintenance and
    per ended one; the feed's id is its own URL."""
    entries: list[tuple[datetime, str, str, str]] = []  # (updated, id, title, text)
    for env in view:
        for m in env.maintenances:
            head = f"{m.plan} ({m.environment})"
            for u in m.updates:
                entries.append((u["at"], u["id"], f"{head}: {_KIND_TITLE[u['kind']]}", u["text"]))
            if m.scheduled_at is not None and m.window is not None:
                entries.append(
                    (
                        m.scheduled_at,
                        str(uuid.uuid5(_ID_SPACE, f"{m.ref}:scheduled:{m.window['start']}")),
                        f"{head}: Scheduled maintenance",
                        f"Maintenance is scheduled: {m.window['text']}.",
                    )
                )
            if m.ended_at is not None:
                entries.append(
                    (
                        m.ended_at,
                        str(uuid.uuid5(_ID_SPACE, f"{m.ref}:ended")),
                        f"{head}: {m.status_text}",
                        m.note,
                    )
                )
    entries.sort(key=lambda e: e[0], reverse=True)
    ET.register_namespace("", _ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{_ATOM}}}{tag}", attrs)
        if text is not None:
            el.text = text
        return el

    feed = ET.Element(f"{{{_ATOM}}}feed")
    sub(feed, "id", feed_url)
    sub(feed, "title", title)
    sub(feed, "updated", _atom_time(entries[0][0] if entries else now()))
    author = sub(feed, "author")
    sub(author, "name", "tminus")
    sub(feed, "link", rel="self", href=feed_url, type="application/atom+xml")
    sub(feed, "link", rel="alternate", href=page_url, type="text/html")
    for updated, ref, head, text in entries:
        entry = sub(feed, "entry")
        sub(entry, "id", f"urn:uuid:{ref}")
        sub(entry, "title", head)
        sub(entry, "updated", _atom_time(updated))
        sub(entry, "link", rel="alternate", href=page_url, type="text/html")
        sub(entry, "content", text, type="text")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + bytes(ET.tostring(feed, encoding="utf-8"))


_KIND_TITLE = {
    "notice": "Scheduled maintenance",
    "started": "Maintenance started",
    "update": "Update",
    "on_hold": "On hold",
    "resolved": "Completed",
    "incident": "Incident",
}


# --- HTTP -----------------------------------------------------------------------------------
router = APIRouter()

_HEADERS = {
    "Cache-Control": f"public, max-age={MAX_AGE_S}",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _store(request: Request) -> StatusStore:
    store: StatusStore = request.app.state.server.store
    return store


def _answer(request: Request, body: bytes, media_type: str) -> Response:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**_HEADERS, "ETag": etag}
    wanted = [t.strip() for t in request.headers.get("if-none-match", "").split(",")]
    if etag in wanted or "*" in wanted:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _not_found() -> Response:
    return Response(
        "no such status page\n", status_code=404, media_type="text/plain", headers=_HEADERS
    )


def _env_ok(environment: str) -> bool:
    return 0 < len(environment) <= _ENV_MAX and environment.isprintable()


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def _page(request: Request, environment: str | None) -> Response:
    view = public_view(_store(request), environment)
    body = render_html(view, environment)
    return _answer(request, body, "text/html; charset=utf-8")


async def _json(request: Request, environment: str | None) -> Response:
    return _answer(request, render_json(public_view(_store(request), environment)), _JSON)


async def _atom(request: Request, environment: str | None) -> Response:
    from urllib.parse import quote

    base = _base(request)
    path = f"/status/{quote(environment, safe='')}" if environment is not None else "/status"
    title = f"Status: {environment}" if environment is not None else "Status"
    body = render_atom(
        public_view(_store(request), environment), f"{base}{path}.atom", f"{base}{path}", title
    )
    return _answer(request, body, "application/atom+xml; charset=utf-8")


_JSON = "application/json"


@router.get("/status", include_in_schema=False)
async def status_page(request: Request) -> Response:
    return await _page(request, None)


@router.get("/status.json", include_in_schema=False)
async def status_json(request: Request) -> Response:
    return await _json(request, None)


@router.get("/status.atom", include_in_schema=False)
async def status_atom(request: Request) -> Response:
    return await _atom(request, None)


# The suffixed routes first: ``/status/{environment}`` would take ``prod.json`` too.
@router.get("/status/{environment}.json", include_in_schema=False)
async def environment_json(request: Request, environment: str) -> Response:
    return await _json(request, environment) if _env_ok(environment) else _not_found()


@router.get("/status/{environment}.atom", include_in_schema=False)
async def environment_atom(request: Request, environment: str) -> Response:
    return await _atom(request, environment) if _env_ok(environment) else _not_found()


@router.get("/status/{environment}", include_in_schema=False)
async def environment_page(request: Request, environment: str) -> Response:
    return await _page(request, environment) if _env_ok(environment) else _not_found()
