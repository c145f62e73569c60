"""Seed 002's communication plan rehearsed with travelled time (issue #16, "Tests": T-48h,
T-24h, T-1h, every 30 minutes during, and after-success messages arrive once each, in order,
with the right audience).

The plan is examples/seeds/media-repository.yaml. Its ``notifications`` section (channels and
rules) is used **as written**, in a **rewritten copy** of the plan (``rehearsal_plan``) in
which only the addresses change: the two email channels' ``smtp`` point at the test's SMTP
server, ``in_app``'s ``url`` at the test's HTTP receiver and ``status_page``'s ``url`` at the
Statuspage stand-in; the status page's key comes in through the plan's own secret
(``STATUSPAGE_TOKEN`` for ``${statuspage_token}``), and the stand-in refuses any other.
Everything else is real: ``tminus schedule``, a ``tminus serve`` process (its workers run the
deploy with the engine) on a travelled clock (tests/serve/conftest.py), the store, the
outbox, every notifier, the network.

Receivers (real, on 127.0.0.1; tests/notifiers/receivers.py):

- ``everyone_email``, ``team_email``: aiosmtpd, plain SMTP as the plan's channels say
  (``security: none``, its local relay; STARTTLS and AUTH are tests/notifiers/test_email.py's);
- ``in_app`` (``kind: webhook``): a recording HTTP server;
- ``status_page`` (``kind: statuspage``): tests/notifiers/statuspage_fake.py, a local
  stand-in for Atlassian's API (not Atlassian's), which keeps the incident's lifecycle;
- ``console`` (``kind: log``): the output of the servers and of the deploy's worker (its
  runner prints the messages it sends itself);
- and the built-in public status page of ``tminus serve`` (``/status.json``), which shows
  only the ``audience: public`` messages.

The time line: scheduled at T-3d for T-0 = Sunday 2027-01-10 02:00 America/New_York (the
seed's window, 2:00-9:00 AM Eastern), the ``deployment_lead`` approval given at T-3d, then
T-48h, T-24h, **SIGTERM of the server and a new one**, T-1h, T-0 (the deploy starts), every 30
minutes of the window with the phases ending at the seed's estimates (1h, 2h, 1h, 1h, then
phase 5 at T+6h55m rather than T+7h: at T+7h the window has closed), T+7h (no more updates:
the deploy succeeded), and success+1h. The clock moves on only once every message recorded so
far is sent, as in real time, where half an hour never passes during a send: a jump of the
travelled clock past the outbox's 60 s lease while a message is being sent lets a second
sender claim it and send it again (a first version of this test, travelling at once, got
some updates two and three times; see the report to issue #16).

Reductions (what the copy changes besides the addresses):

- every phase's steps are replaced by local stand-ins: the phase's ``notify`` and
  ``maintenance`` steps are kept as written, in their place (maintenance mode is the plan's
  flag file, which no application reads); each run of other steps before the last one is
  one ``true``; the last run of other steps is one ``run`` step that waits for the test to
  open its gate (``gates/N``), so that the phase lasts the travelled time the test gives
  it. Not run: the backups, the migrations and their tested rollback
  (tests/examples/test_seed_rehearsals.py rehearses phase 2 on PostgreSQL), SSH to the
  production server, the releases, the HTTP checks, the frontend build, the performance
  probe and the UAT ``approve`` step;
- left out of the copy: the phases' ``verify`` and ``rollback``, ``checklist`` (so
  ``tminus schedule`` is given no ``--confirm``), ``targets``, ``checks``,
  ``success_metrics``, ``watch`` (its Prometheus checks would measure nothing here) and with
  it the ``watch_critical`` rule (``tminus check`` rejects a rule that cannot fire),
  ``operations``, ``risks``, ``rollback_triggers``, ``health``;
- only the success path: the ``failure`` and ``rollback`` rules do not fire (asserted).

Mutations tried (each made this test fail, then was restored):

- the server's notice timers planned under a key that is not the same for every server
  (:func:`tminus.serve.planner.plan_timers` with the process id in ``notice:…``): after the
  restart the new server records T-48h and T-24h again (late: T-0 is still ahead) and every
  receiver of those notices gets them twice;
- :func:`tminus.serve.fire._notice` without ``phase``/``engine_context`` (as it was): the
  ``during`` updates say "between phases" and no downtime, and the phase assertions fail.

``python -m tests.serve.test_comms_rehearsal [FILE]`` runs the same rehearsal outside pytest
and prints every receiver's captures (and writes them to FILE): what the closing note of #16
quotes.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import signal
import sqlite3
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import yaml

from tests.notifiers.receivers import Mailbox, Recorder, recording_server, start_smtp
from tests.notifiers.statuspage_fake import PAGE_ID, StatuspageFake
from tests.notifiers.statuspage_fake import serve as statuspage
from tests.serve.conftest import Serve, write

SEED = Path(__file__).resolve().parents[2] / "examples" / "seeds" / "media-repository.yaml"
#: Sunday 2:00 AM Eastern (EST = UTC-5): the seed's window.
T0 = datetime(2027, 1, 10, 7, 0, tzinfo=UTC)
DEPLOY = "media-repository-1"
TOKEN = "sp-rehearsal-key-4Kq9"
IN_APP_PATH = "/media-repository/in-app-notifications"
#: When each phase's gate opens, after T-0: the seed's estimates (1h, 2h, 1h, 1h, 2h), the
#: last a little before the window's end.
PHASE_ENDS = [timedelta(hours=h) for h in (1, 3, 4, 5)] + [timedelta(hours=6, minutes=55)]
EVERY = timedelta(minutes=30)
#: The step kinds kept as written in the stand-in phases (local, quick).
KEPT = ("notify", "maintenance")


# --- the rewritten copy -----------------------------------------------------------------------
def _stand_ins(phase: dict[str, Any], gate: Path) -> list[dict[str, Any]]:
    """The phase's ``notify`` and ``maintenance`` steps as written; the other steps' runs as
    one step each, the last of them the gate."""
    runs: list[list[dict[str, Any]] | dict[str, Any]] = []
    for step in phase["steps"]:
        if step["kind"] in KEPT:
            runs.append(step)
        elif runs and isinstance(runs[-1], list):
            runs[-1].append(step)
        else:
            runs.append([step])
    last = max(i for i, r in enumerate(runs) if isinstance(r, list))
    out: list[dict[str, Any]] = []
    for i, r in enumerate(runs):
        if isinstance(r, dict):
            out.append(r)
            continue
        what = f"stand-in for {len(r)} step(s), from '{r[0]['name']}'"
        if i == last:
            command = f"while [ ! -e {gate} ]; do sleep 0.05; done"
            out.append({"kind": "run", "name": f"{what}: waits for its gate", "command": command})
        else:
            out.append({"kind": "run", "name": what, "command": "true"})
    return out


def rehearsal_plan(smtp_port: int, in_app: str, status_url: str, gates: Path) -> str:
    """The seed's plan with its addresses pointed at the receivers and its phases reduced
    (see the module's docstring)."""
    doc = yaml.safe_load(SEED.read_text())
    kept = ["tminus", "name", "version", "environment", "owner", "risk", "description"]
    kept += ["window", "roles", "approvals", "variables", "secrets", "maintenance"]
    plan = {k: doc[k] for k in kept} | {"notifications": doc["notifications"]}
    rules = plan["notifications"]["rules"]
    assert rules[-1]["when"] == "watch_critical"  # no watch here: it could never fire
    del rules[-1]
    channels = plan["notifications"]["channels"]
    for name in ("everyone_email", "team_email"):
        assert channels[name]["smtp"] == "127.0.0.1:1025"
        channels[name]["smtp"] = f"127.0.0.1:{smtp_port}"
    assert channels["in_app"]["url"].endswith(IN_APP_PATH)
    channels["in_app"]["url"] = in_app + IN_APP_PATH
    channels["status_page"]["url"] = status_url
    fields = ("name", "description", "estimate", "downtime", "risk", "owner", "on_failure")
    plan["phases"] = [
        {k: p[k] for k in fields if k in p} | {"steps": _stand_ins(p, gates / str(n))}
        for n, p in enumerate(doc["phases"], 1)
    ]
    return yaml.safe_dump(plan, sort_keys=False, allow_unicode=True, width=1000)


# --- the rehearsal ----------------------------------------------------------------------------
@dataclass
class Receivers:
    smtp: Mailbox
    in_app: Recorder
    page: StatuspageFake


@contextmanager
def receivers() -> Iterator[Receivers]:
    with ExitStack() as stack:
        ctl, box = start_smtp(None, "none")
        stack.callback(ctl.stop)
        rec = stack.enter_context(recording_server())
        page = stack.enter_context(statuspage(TOKEN))
        yield Receivers(box, rec, page)


@dataclass
class Rehearsal:
    """What the receivers got, and the store's account of it."""

    emails: list[EmailMessage] = field(default_factory=list)
    rcpts: list[list[str]] = field(default_factory=list)
    in_app: list[dict[str, Any]] = field(default_factory=list)
    in_app_headers: list[dict[str, str]] = field(default_factory=list)
    page_calls: list[dict[str, Any]] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    status_json: dict[str, Any] = field(default_factory=dict)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    state: str = ""
    servers: list[int] = field(default_factory=list)


def _query(s: Serve, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the store (SQLite, read-only) without starting a CLI process per poll."""
    with sqlite3.connect(f"file:{s.cwd / '.tminus' / 'state.db'}?mode=ro", uri=True) as db:
        return db.execute(sql, args).fetchall()


def _notices(s: Serve) -> list[str]:
    """The keys of the server's notices (a ``notify`` step's event has none), in order."""
    q = "SELECT key FROM events WHERE deploy_id = ? AND type = 'notify' AND key IS NOT NULL"
    return [str(k) for (k,) in _query(s, q + " ORDER BY seq", DEPLOY)]


def _phase(s: Serve, i: int) -> str:
    rows = _query(s, "SELECT state FROM phases WHERE deploy_id = ? AND idx = ?", DEPLOY, i)
    return str(rows[0][0]) if rows else ""


def _state(s: Serve) -> str:
    return str(_query(s, "SELECT state FROM deploys WHERE id = ?", DEPLOY)[0][0])


def _skipped(s: Serve) -> list[str]:
    q = "SELECT message FROM events WHERE deploy_id = ? AND type = 'notify.skipped' ORDER BY seq"
    return [str(m) for (m,) in _query(s, q, DEPLOY)]


def _all_sent(s: Serve, n: int) -> bool:
    """``n`` messages recorded in the outbox, every one of them sent."""
    q = "SELECT state, count(*) FROM outbox WHERE deploy_id = ? GROUP BY state"
    counts = dict(_query(s, q, DEPLOY))
    return counts.get("sent") == n and sum(counts.values()) == n


def _due_notice(s: Serve, prefix: str) -> None:
    s.wait_for(prefix, lambda: any(k.startswith(prefix) for k in _notices(s)))


def run_rehearsal(cwd: Path, r: Receivers) -> Rehearsal:
    s = Serve(cwd)
    gates = cwd / "gates"
    gates.mkdir()
    s.tm.env["STATUSPAGE_TOKEN"] = TOKEN
    write(cwd / "plan.yaml", rehearsal_plan(r.smtp.port, r.in_app.url, r.page.url, gates))
    out = Rehearsal()
    n = 0  # messages recorded so far

    def delivered(more: int) -> None:
        """Wait until the ``more`` new messages are recorded and every message is sent: the
        clock moves on only then, as real time would (see the module's docstring)."""
        nonlocal n
        n += more
        s.wait_for(f"{n} messages sent", lambda: _all_sent(s, n))

    try:
        s.travel_to(T0 - timedelta(days=3))
        sched = s.tm("schedule", "plan.yaml", "--at", "2027-01-10T02:00", check=0).stdout
        assert "scheduled: starts in 3d" in sched, sched
        s.tm("approve", DEPLOY, "--role", "deployment_lead", "--as", "rehearsal-lead", check=0)
        first, _port = s.start("serve")
        for offset, prefix in [(48, "notice:0:"), (24, "notice:1:")]:
            s.travel_to(T0 - timedelta(hours=offset))
            _due_notice(s, prefix)
            delivered(3)  # everyone_email, in_app, status_page
        first.send_signal(signal.SIGTERM)  # between T-24h and T-1h: a new server takes over
        out.servers.append(first.wait(timeout=60))
        s.travel_to(T0 - timedelta(hours=23))
        second, _port = s.start("serve2")
        s.travel_to(T0 - timedelta(hours=1))
        _due_notice(s, "notice:2:")
        delivered(2)  # in_app, status_page
        s.travel_to(T0)
        _due_notice(s, "window_start:3:")
        s.wait_for("phase 1 running", lambda: _phase(s, 0) == "running")
        delivered(1 + 2)  # status_page; phase 1's notify step: team_email, console
        phase = 0
        for k in range(1, 14):  # T+30m … T+6h30m
            s.travel_to(T0 + k * EVERY)
            key = f"during:4:{k}"
            s.wait_for(key, lambda: key in _notices(s))  # noqa: B023 - called here, at once
            delivered(2)  # team_email, console
            if phase < 4 and k * EVERY == PHASE_ENDS[phase]:
                (gates / str(phase + 1)).touch()
                phase += 1
                s.wait_for(f"phase {phase + 1}", lambda: _phase(s, phase) == "running")  # noqa: B023
                if phase == 2:
                    delivered(2)  # phase 2's notify step, at its end
        s.travel_to(T0 + PHASE_ENDS[4])
        (gates / "5").touch()
        s.wait_for("success", lambda: _state(s) == "succeeded")
        s.travel_to(T0 + timedelta(hours=7))  # the next update's time: none, it succeeded
        s.wait_for("T+7h skipped", lambda: any(m.startswith("T+7h") for m in _skipped(s)))
        s.travel_to(T0 + PHASE_ENDS[4] + timedelta(hours=1, minutes=1))
        _due_notice(s, "after_success:5")
        delivered(2)  # everyone_email, status_page
        out.outbox = s.tm.json("notifications", DEPLOY)
        _status, body = s.get(s.port or 0, "/status.json")
        out.status_json = json.loads(body)
        out.notices = _notices(s)
        out.skipped = _skipped(s)
        out.state = _state(s)
        second.send_signal(signal.SIGTERM)
        out.servers.append(second.wait(timeout=60))
    finally:
        s.stop_all()
    for envelope, _session in r.smtp.received:
        raw = envelope.original_content or envelope.content or b""
        assert isinstance(raw, bytes)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        out.emails.append(parsed)
        out.rcpts.append(list(envelope.rcpt_tos))
    for req in r.in_app.requests:
        out.in_app.append(req.json())
        out.in_app_headers.append(req.headers)
    out.page_calls = [
        {"method": c.method, "path": c.path.removeprefix(f"/v1/pages/{PAGE_ID}"), "body": c.body}
        for c in r.page.calls
    ]
    # the servers print their `console` messages, a deploy's runner (a worker) its own
    worker_log = cwd / ".tminus" / "serve" / "logs" / f"{DEPLOY}.log"
    texts = [s.log("serve"), s.log("serve2")]
    texts.append(worker_log.read_text(errors="replace") if worker_log.exists() else "")
    out.console = [
        line
        for text in texts
        for line in text.splitlines()
        if line.startswith(("[info] ", "[warning] ", "[critical] "))
    ]
    return out


# --- the captures, readable -------------------------------------------------------------------
def _email_text(m: EmailMessage) -> str:
    body = m.get_body(("plain",))
    return body.get_content().strip() if body is not None else ""


def captures(out: Rehearsal) -> str:
    lines = ["# Seed 002 (media-repository): what each receiver got", ""]
    lines.append(f"## SMTP (aiosmtpd): {len(out.emails)} emails")
    for m, rcpt in zip(out.emails, out.rcpts, strict=True):
        lines.append(f"- to {', '.join(rcpt)}")
        lines.append(f"  Subject: {m['Subject']}")
        lines.append(f"  X-Tminus-Key: {m['X-Tminus-Key']}")
        lines += ["  | " + t for t in _email_text(m).splitlines()]
    lines += ["", f"## in_app webhook: {len(out.in_app)} POSTs to {IN_APP_PATH}"]
    for b in out.in_app:
        msg = b["message"]
        lines.append(f"- [{msg['audience']}] {msg['title']}: {msg['text']}")
        lines.append(f"  id {b['id']}")
    lines += ["", f"## Statuspage stand-in: {len(out.page_calls)} calls"]
    for c in out.page_calls:
        inc = (c["body"] or {}).get("incident", {})
        shown = {
            k: inc[k] for k in ("name", "status", "scheduled_for", "scheduled_until") if k in inc
        }
        lines.append(f"- {c['method']} {c['path']} {json.dumps(shown)}")
        lines.append(f"  body: {inc.get('body', '')}")
    lines += ["", f"## console (kind: log; servers and worker): {len(out.console)} lines"]
    lines += [f"- {line}" for line in out.console]
    lines += ["", "## tminus serve /status.json (public)"]
    for env in out.status_json.get("environments", []):
        for m in env["maintenances"]:
            lines.append(f"- {env.get('environment')}: {m.get('status_text')} ({m.get('status')})")
            lines.append(f"  window: {(m.get('window') or {}).get('text')}")
            lines += [f"  {u['at']} [{u['kind']}] {u['text']}" for u in m.get("updates", [])]
    lines += ["", f"## skipped by the server: {out.skipped}"]
    return "\n".join(lines) + "\n"


# --- the test ---------------------------------------------------------------------------------
def _key(m: EmailMessage) -> str:
    return str(m["X-Tminus-Key"])


def test_seed_002_communications_arrive_once_in_order_to_their_audience(tmp_path: Path) -> None:
    """See the module's docstring for the stand-ins, the reductions and the mutations."""
    with receivers() as r:
        out = run_rehearsal(tmp_path, r)
    text = captures(out)
    (tmp_path / "captures.md").write_text(text)
    print("\n" + text)
    assert out.servers == [0, 0] and out.state == "succeeded"

    # The server's notices: each once, in order (T-0's and the updates', T+7h's skipped).
    expected = ["notice:0:", "notice:1:", "notice:2:", "window_start:3:"]
    expected += [f"during:4:{k}" for k in range(1, 14)] + ["after_success:5"]
    assert len(out.notices) == len(expected), out.notices  # each once
    for key, prefix in zip(out.notices, expected, strict=True):
        assert key.startswith(prefix), out.notices
    assert any(s.startswith("T+7h") and "succeeded" in s for s in out.skipped), out.skipped
    # Every message delivered at the first attempt; no failure or rollback message.
    assert all(r["attempts"] == 1 for r in out.outbox), out.outbox
    assert not {"failure", "rollback", "watch_critical"} & {r["when"] for r in out.outbox}
    assert len({r["key"] for r in out.outbox}) == len(out.outbox)

    # everyone_email: T-48h, T-24h, success+1h to stakeholders, users and support.
    everyone = ["stakeholders@example.com", "users@example.com", "support@example.com"]
    team = ["stakeholders@example.com", "support@example.com"]
    to_all = [m for m, rc in zip(out.emails, out.rcpts, strict=True) if rc == everyone]
    to_team = [m for m, rc in zip(out.emails, out.rcpts, strict=True) if rc == team]
    assert len(to_all) + len(to_team) == len(out.emails) == 3 + 2 + 13
    assert [_key(m).split("/")[2].split(":")[0] for m in to_all] == [
        "notice",
        "notice",
        "after_success",
    ]
    assert [str(m["Subject"]).strip() for m in to_all] == [
        "[media-repository production] T-2d: media-repository (production)",
        "[media-repository production] T-1d: media-repository (production)",
        "[media-repository production] success+1h: media-repository (production)",
    ]
    assert "Expect downtime of the media features" in _email_text(to_all[0])
    assert "Reminder: scheduled maintenance tomorrow" in _email_text(to_all[1])
    assert "Post-deployment summary" in _email_text(to_all[2])
    # team_email: the phase 1 and phase 2 notify steps and the 13 updates, in order.
    keys = [_key(m) for m in to_team]
    assert len(set(keys)) == len(keys) == 15
    updates = [k for k in keys if k.startswith("during/")]
    assert updates == [f"during/4/during:4:{k}" for k in range(1, 14)]
    steps = [i for i, k in enumerate(keys) if not k.startswith("during/")]
    assert steps == [0, 7], keys  # phase 1's at T-0+, phase 2's after T+3h's update
    assert "pre-deployment backup of media-repository-1" in _email_text(to_team[0])
    assert "test rollback passed" in _email_text(to_team[7])
    texts = [_email_text(m) for m in to_team if _key(m).startswith("during/")]
    phases_seen = [re.search(r"Phase (\d)", t) for t in texts]
    assert [m.group(1) if m else None for m in phases_seen] == list("1122223344555"), texts
    assert "T+30m" in texts[0] and "downtime so far none" in texts[0], texts[0]
    # phase 2 (downtime: true), 1h into it: its maintenance began when its first step ran,
    # up to a second after T+1h on the travelled clock (shown to the second, so 59m59s)
    assert re.search(r"downtime so far (1h|59m5\ds)\b", texts[3]), texts[3]
    # No internal message reaches users: nothing to users@ but the three public ones.
    assert all("users@example.com" not in rc for m, rc in zip(out.emails, out.rcpts, strict=True)
               if m not in to_all)  # fmt: skip

    # in_app (Users): T-48h, T-24h, T-1h, each public, once.
    assert [b["message"]["title"].split(":")[0] for b in out.in_app] == ["T-2d", "T-1d", "T-1h"]
    assert {b["message"]["audience"] for b in out.in_app} == {"public"}
    assert len({h["Tminus-Id"] for h in out.in_app_headers}) == 3
    assert out.in_app[2]["message"]["text"] == "Maintenance starts in 1 hour."

    # status_page: one scheduled maintenance through its lifecycle, public texts only.
    calls = [
        (c["method"], c["path"], (c["body"] or {}).get("incident", {})) for c in out.page_calls
    ]
    assert [(m, p) for m, p, _ in calls] == [("POST", "/incidents")] + [
        ("PATCH", "/incidents/inc0001")
    ] * 4, calls
    created = calls[0][2]
    assert created["status"] == "scheduled"
    assert datetime.fromisoformat(created["scheduled_for"]) == T0  # 2:00 AM Eastern
    assert datetime.fromisoformat(created["scheduled_until"]) == T0 + timedelta(hours=7)
    assert [c[2].get("status") for c in calls[1:]] == [None, None, "in_progress", "completed"]
    assert calls[3][2]["body"].startswith("Maintenance in progress")
    assert all("Deployment status" not in json.dumps(c[2]) for c in calls)  # internal
    assert r.page.incidents["inc0001"]["status"] == "completed"

    # console: the 13 updates and the two notify steps, on the second server.
    assert len(out.console) == 15, out.console
    assert sum("Deployment status" in line for line in out.console) == 13

    # The built-in status page: the public messages, not the internal ones.
    (env,) = out.status_json["environments"]
    (maint,) = env["maintenances"]
    assert maint["status"] == "completed"
    shown = [u["text"] for u in maint["updates"]]
    assert len(shown) == 5, shown  # T-48h, T-24h, T-1h, T-0, success+1h
    assert not any("Deployment status" in t or "backup" in t for t in shown), shown


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, receivers() as r:
        text = captures(run_rehearsal(Path(tmp), r))
    print(text)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)


if __name__ == "__main__":
    main()
