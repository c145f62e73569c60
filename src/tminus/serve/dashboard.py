"""The dashboard of ``tminus serve``: server-rendered pages (Jinja2, ``templates/dash_*``)
with a small script (``static/dash.js``, no framework, no CDN) that keeps a deploy's page live
from its event stream (``/api/v1/deploys/{id}/stream``) and sends the operator's actions to
the API (:mod:`tminus.serve.api`) with the session's CSRF token.

- ``/``: the deploys, newest first, with filters (state, plan, environment), the countdown of
  scheduled ones, and (for operators) a form that starts a deploy of a plan file.
- ``/deploys/{id}``: one deploy, live: state, phases against their estimates, steps, the
  hosts × steps grid of fleet steps, the canary's weight and each analysis measurement,
  maintenance downtime running, the ETA against the window's end, the router's split and the
  feature flags' ramp, the watch's charts (at most about
  :data:`~tminus.serve.charts.MAX_POINTS` points a check), the event log; buttons for every
  action the person may take now (a destructive one asks first), and who may press them.
- ``/deploys/{id}/panel``: the live parts of that page alone (``dash_live.html``: the panel
  and the actions the person may take now), what the script re-fetches when an event
  arrives; it swaps the actions in only when they changed (a form being typed into is kept).

The report and the runbook are the API's (``/api/v1/deploys/{id}/report``, ``…/runbook``),
which a logged-in browser reads with its session.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from tminus.serve import charts
from tminus.serve.auth import Caller, access, csrf_token, page_caller

if TYPE_CHECKING:
    from jinja2 import Environment
    from markupsafe import Markup

    from tminus.serve.server import Server
    from tminus.store import Store

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_ENV: Environment | None = None
_STATIC = {"dash.js": "text/javascript", "dash.css": "text/css"}
#: Actions and the permission each needs (shown on the page as "who may press").
_ACTIONS = {
    "approve": "approver",
    "promote": "approver",
    "confirm": "operator",
    "pause": "operator",
    "resume": "operator",
    "abort": "operator",
    "rollback": "operator",
}


def _env() -> Environment:
    global _ENV
    if _ENV is None:
        from jinja2 import Environment, FileSystemLoader, select_autoescape

        folder = resources.files("tminus.serve") / "templates"
        _ENV = Environment(
            loader=FileSystemLoader(str(folder)),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        _ENV.filters["dur"] = _duration
        _ENV.filters["ts"] = _ts
    return _ENV


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _ts(value: Any) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return str(value or "–")


def _server(request: Request) -> Server:
    return request.app.state.server  # type: ignore[no-any-return]


def _page(request: Request, name: str, who: Caller, **context: Any) -> HTMLResponse:
    html = (
        _env()
        .get_template(name)
        .render(person=who.person, csrf=csrf_token(request), request=request, **context)
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in _STATIC:
        raise HTTPException(404, "no such file")
    body = (resources.files("tminus.serve") / "static" / name).read_bytes()
    return Response(body, media_type=_STATIC[name], headers={"Cache-Control": "max-age=300"})


@router.get("/", response_class=HTMLResponse)
async def deploys(
    request: Request,
    state: str | None = None,
    plan: str | None = None,
    environment: str | None = None,
    page: int = 0,
    who: Caller = Depends(page_caller),
) -> HTMLResponse:
    from tminus.engine.liveness import shown_state

    store = _server(request).store
    rows = store.deploy_page(
        state=state or None,
        plan=plan or None,
        environment=environment or None,
        offset=min(max(0, page), 10**9) * 50,
        limit=50,
    )
    mine = access(store, who)  # the grants read once, not once per plan on the page
    seen: dict[tuple[str, str], bool] = {}
    shown = []
    for r in rows:
        key = (str(r["plan_name"]), str(r["environment"]))
        if key not in seen:
            seen[key] = mine.allows("viewer", *key)
        if seen[key]:
            shown.append(r | {"shown": shown_state(r), "countdown": _countdown(r)})
    return _page(
        request,
        "dash_list.html",
        who,
        deploys=shown,
        filters={"state": state or "", "plan": plan or "", "environment": environment or ""},
        page=page,
        more=len(rows) == 50,
        may_start=_may_start(store, who),
        plans=_startable(store, who),
    )


def _countdown(r: dict[str, Any]) -> str | None:
    from tminus.clock import now

    if r["state"] != "scheduled" or r.get("due_at") is None:
        return None
    left = (r["due_at"] - now()).total_seconds()
    return f"T-{_duration(left)}" if left > 0 else "due now"


def _startable(store: Store, who: Caller) -> list[dict[str, Any]]:
    """The registered plans the person may start."""
    from tminus.serve.auth import access

    mine = access(store, who)
    return [
        r
        for r in store.registered_plans()
        if mine.allows("operator", str(r["name"]), str(r["environment"]))
    ]


def _may_start(store: Store, who: Caller) -> bool:
    from tminus.serve.auth import access

    return any(g["permission"] == "operator" for g in access(store, who).grants)


def view(store: Store, deploy_id: str, who: Caller) -> dict[str, Any]:
    """Everything the deploy page shows (and what the person may do on it)."""
    from tminus.engine.status import deploy_status
    from tminus.plan.loader import load_plan_text
    from tminus.serve.auth import access

    # The log's events first: the page's live stream starts after the newest of them, so an
    # event a worker writes while the rest is read reaches the page (and refreshes the state
    # shown). Read after the state, such an event would be in the log but never streamed,
    # and the page would show the older state until the next event (a deploy waiting for an
    # approval has none).
    # The log shows the newest events; the charts read only their own (a long watch's log
    # is thousands of events: the page does not read them all).
    events = store.events_tail(deploy_id, 200)
    d = store.deploy(deploy_id)
    plan_env = (str(d["plan_name"]), str(d["environment"]))
    plan = load_plan_text(d["plan_text"], d["plan_path"], semantic=False).plan
    info = deploy_status(store, deploy_id, loaded=(d, plan))
    mine_access = access(store, who)
    may = {a: mine_access.allows(p, *plan_env) for a, p in _ACTIONS.items()}
    roles = {n: list(r.people) for n, r in (plan.roles if plan else {}).items()}
    mine = [n for n, people in roles.items() if not people or who.person in people]
    confirmed = set(store.confirmations(deploy_id))
    manual = [
        e.item
        for e in (plan.checklist if plan else [])
        if e.check is None and e.item not in confirmed
    ]
    drawn = charts.series(store, deploy_id, plan)
    eta = _eta(plan, info)
    step_rows = store.step_rows(deploy_id)
    # the steps in the order they ran (then those not started), without the phases' own
    # start and end records (the phases table shows those)
    far = datetime.max.replace(tzinfo=UTC)
    steps = sorted(
        (x for x in info["steps"] if not str(x["key"]).endswith(("/start", "/end"))),
        key=lambda x: (x["started_at"] or far, str(x["key"])),
    )
    ended = info["state"] in ("succeeded", "failed", "rolled_back", "aborted", "cancelled")
    return {
        "timeline": _timeline(store, plan, d, step_rows),
        "routing": _routing(drawn.routing, step_rows),
        "watch": drawn.watch,
        "d": d,
        "info": info,
        "steps": steps,
        "plan": plan,
        "may": may,
        "who_may": {a: p for a, p in _ACTIONS.items()},
        "roles": roles,
        "my_roles": mine,
        "manual": manual,
        "events": events,
        "last_seq": events[-1]["seq"] if events else 0,
        "weights": drawn.weights,
        "measurements": drawn.points[-200:],
        "eta": eta,
        "ended": ended,
        "waiting": info["state"] in ("awaiting_approval", "awaiting_confirmation"),
        "paused": info["state"] in ("paused", "crashed"),
        # approvals are taken before T-0 and while the deploy or one of its steps waits
        "signing": info["state"] in ("scheduled", "pending", "awaiting_approval")
        or any(r["state"] == "waiting" for r in step_rows.values()),
        # a canary holding its weight waits for a promotion
        "holding": any(
            r["state"] == "waiting" and r["kind"] == "canary" for r in step_rows.values()
        ),
    }


def _timeline(
    store: Store, plan: Any, d: dict[str, Any], step_rows: dict[str, dict[str, Any]]
) -> list[Markup]:
    """The planned-versus-actual charts of the report (one per group of phases), drawn by
    the report's own code (its text escaped there)."""
    from markupsafe import Markup

    from tminus.report import svg, timeline

    phase_rows = store.phase_rows(str(d["id"]))
    if not phase_rows:
        return []
    tl = timeline.build_timeline(plan, d, phase_rows, step_rows)
    by_index = {p["index"]: p for p in tl["phases"]}
    out = []
    for n, group in enumerate(tl["groups"]):
        phases = [by_index[i] for i in group]
        title = "Phases of the window" if n == 0 else f"Delayed from phase {phases[0]['number']}"
        out.append(Markup(svg.gantt(phases, title)))
    return out


def _routing(events: list[dict[str, Any]], steps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The router's split and the feature flags as this deploy left them, from its events
    (each flag's values in order: the ramp), and the cookie preview of a blue_green step (its
    checks' verdicts when done; "previewing" while it runs)."""
    weights: dict[str, int] | None = None
    flags: dict[str, list[str]] = {}
    for e in events:
        data = e["data"] or {}
        if e["type"] == "blue_green.switched":
            weights = {str(data.get("from")): 0, str(data.get("to")): 100}
        elif e["type"] in ("traffic.set", "traffic.restored") and data.get("weights"):
            weights = {str(k): int(v) for k, v in data["weights"].items()}
        elif e["type"] == "flag.set":
            st = data.get("state") or {}
            shown = f"{'on' if st.get('enabled') else 'off'}, {float(st.get('percentage') or 0):g}%"
            flags.setdefault(str(data.get("flag")), []).append(shown)
        elif e["type"] == "flag.restored":
            name, _, shown = str(e["message"] or "").partition(": ")
            flags.setdefault(name, []).append(shown)
    previews = [
        {
            "title": x["title"],
            "state": x["state"],
            "checks": (x.get("artifacts") or {}).get("preview") or [],
        }
        for x in steps.values()
        if x.get("kind") == "blue_green"
    ]
    return {"weights": weights, "flags": flags, "previews": previews}


def _eta(plan: Any, info: dict[str, Any]) -> dict[str, Any] | None:
    """When the deploy should end at this pace (the estimates of the phases not done yet),
    against the window's end."""
    from tminus.clock import now

    if plan is None or info["state"] not in ("running", "paused", "awaiting_approval"):
        return None
    left = 0.0
    for ph in info["phases"]:
        if ph["state"] in ("succeeded", "skipped", "not selected"):
            continue
        est = ph["estimate_s"] or 0.0
        left += max(0.0, est - (ph["actual_s"] or 0.0))
    at = now() + timedelta(seconds=left)
    end = None
    window = plan.window
    if window is not None and window.start is not None and window.duration is not None:
        end = window.start + window.duration
    return {"at": at, "left_s": left, "window_end": end, "late": end is not None and at > end}


@router.get("/deploys/{deploy_id}", response_class=HTMLResponse)
async def deploy_page(
    request: Request, deploy_id: str, who: Caller = Depends(page_caller)
) -> HTMLResponse:
    return _page(request, "dash_deploy.html", who, **_view(request, deploy_id, who))


@router.get("/deploys/{deploy_id}/panel", response_class=HTMLResponse)
async def deploy_panel(
    request: Request, deploy_id: str, who: Caller = Depends(page_caller)
) -> HTMLResponse:
    """The live parts of the deploy page (the panel and the actions one may take now), which
    the page's script swaps in when an event arrives."""
    return _page(request, "dash_live.html", who, **_view(request, deploy_id, who))


def _view(request: Request, deploy_id: str, who: Caller) -> dict[str, Any]:
    from tminus.errors import NotFound
    from tminus.serve.auth import require

    store = _server(request).store
    try:
        d = store.deploy(deploy_id)
    except NotFound:
        raise HTTPException(404, f"no deploy '{deploy_id}'") from None
    require(store, who, "viewer", str(d["plan_name"]), str(d["environment"]))
    return view(store, deploy_id, who)
