"""A secret through every template variable and every channel (issue #16, "Secrets and
safety"): a real ``tminus run`` whose plan puts a secret, by ``${api_key}`` and through plan
variables, into every message variable that can carry text (a failed step's name and error,
the reason, who started it, ``vars`` with filters that would defeat a mask applied only at
the end: ``|upper``, ``|reverse``, slices), and sends to every channel kind with its real
local receiver: the console (``log``), a Slack webhook, a webhook, SMTP with STARTTLS and
AUTH (aiosmtpd), the Statuspage stand-in and an Apprise ``json://`` target. Then every
receiver's capture is searched: the secret appears 0 times, nor upper-cased nor reversed.

Mutations tried: :func:`tminus.engine.messages._masked` returning the values unmasked →
the upper-cased and reversed secret reach every receiver (the test fails on them);
``text_for`` without its final ``resolver.mask`` (and ``_masked`` intact) → passes, as it
should: the values are masked before the template sees them.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Tm
from tests.notifiers.conftest import PASSWORD, Cert, Recorder, start_smtp
from tests.notifiers.statuspage_fake import serve

KEY = "zK9-api-Qx7Tw3Lm"  # the secret searched for (distinct from the SMTP password)
TOKEN = "sp-token-0000"

EVERYTHING = (
    "{{ deploy.id }} {{ deploy.plan }} {{ deploy.environment }} {{ deploy.state }} "
    "{{ deploy.link }} {{ deploy.version }} {{ phase.name }} {{ phase.number }}/{{ phase.of }} "
    "{{ window.start }} {{ window.end }} {{ window.timezone }} {{ eta }} {{ downtime_so_far }} "
    "[{{ failed_step }}] [{{ reason }}] [{{ started_by }}] {{ when }} {{ occurrence }} "
    "{{ vars.note }} {{ vars.note|upper }} {{ vars.note|reverse }} {{ vars.note[4:] }} "
    "{{ vars.dsn }} {{ vars.api_copy|upper }} ${api_key} ${note}"
)


def _plan(http: str, smtp_port: int, page_url: str) -> str:
    rule_channels = "[console, team, hook, mail, status, teams]"
    return f"""\
tminus: 1
name: leak
environment: test
window:
  start: 2030-01-01T10:00:00
  timezone: Europe/Berlin
  duration: 2h
secrets:
  api_key: ${{env:API_KEY}}
  smtp_password: ${{env:SMTP_PASSWORD}}
  sp_token: ${{env:SP_TOKEN}}
variables:
  note: "key=${{api_key}}"
  dsn: "postgres://deploy:${{api_key}}@db.internal/app"
  api_copy: "${{api_key}}"
roles:
  dba:
    contact: dba@example.com
notifications:
  channels:
    console: {{kind: log}}
    team:
      kind: slack
      url: {http}/slack
      rate_limit: 20/1s
    hook:
      kind: webhook
      url: {http}/hook
      secret: ${{api_key}}
    mail:
      kind: email
      smtp: 127.0.0.1:{smtp_port}
      username: deploybot
      password: ${{smtp_password}}
      from: deploys@example.com
      to: [ops@example.com]
      to_roles: [dba]
    status:
      kind: statuspage
      url: {page_url}
      token: ${{sp_token}}
    teams:
      kind: apprise
      url: {http.replace("http://", "json://")}/apprise
  rules:
    - when: phase_start
      channels: {rule_channels}
      message: "{EVERYTHING}"
    - when: failure
      channels: {rule_channels}
      message: "{EVERYTHING}"
    - when: paused
      channels: {rule_channels}
      message: "{EVERYTHING}"
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: notify
        message: "a step says ${{api_key}} and ${{note}}"
        channels: {rule_channels}
      - kind: run
        name: "fails with ${{api_key}}"
        command: "echo 'the key is ${{api_key}}' >&2; exit 3"
"""


def test_a_secret_reaches_no_receiver_through_any_variable_or_channel(
    tmp_path: Path, http: Recorder, cert: Cert, trust: None
) -> None:
    ctl, box = start_smtp(cert, "starttls")
    try:
        with serve(TOKEN) as page:
            (tmp_path / "plan.yaml").write_text(_plan(http.url, box.port, page.url))
            tm = Tm(
                tmp_path,
                {
                    "API_KEY": KEY,
                    "SMTP_PASSWORD": PASSWORD,
                    "SP_TOKEN": TOKEN,
                    "TMINUS_OPERATOR": f"ops-{KEY}",  # even a name holding the secret
                },
            )
            run = tm("run", "plan.yaml", "--outside-window", "a rehearsal")
            assert tm.json("status", "leak-1")["state"] == "paused", run.stdout + run.stderr
            rows = tm.json("notifications", "leak-1")
            calls = list(page.calls)
    finally:
        ctl.stop()
    # every message to every channel was delivered (the search below is not vacuous)
    assert {r["state"] for r in rows} == {"sent"}, [(r["channel"], r["detail"]) for r in rows]
    assert len(rows) == 4 * 6  # phase_start, the notify step, failure, paused × 6 channels
    captures = {
        "console": run.stdout + run.stderr,
        "http": json.dumps(
            [
                {"path": r.path, "headers": r.headers, "body": r.body.decode("utf-8", "replace")}
                for r in http.requests
            ]
        ),
        "smtp": "\n".join(
            (env.original_content or env.content or b"").decode("utf-8", "replace")
            for env, _ in box.received
        ),
        "statuspage": json.dumps([c.__dict__ for c in calls]),
    }
    assert len(http.requests) == 3 * 4 and len(box.received) == 4 and calls
    assert {r.path for r in http.requests} == {"/slack", "/hook", "/apprise"}
    assert all("dba@example.com" in env.rcpt_tos for env, _ in box.received)
    for name, text in captures.items():
        for shown in (KEY, KEY.upper(), KEY[::-1], KEY.upper()[::-1]):
            assert shown not in text, (name, shown)
    # …while the messages did carry the masked values and the variables
    bodies = [json.loads(r.body) for r in http.requests if r.path == "/hook"]
    failure = next(b["message"]["text"] for b in bodies if b["message"]["when"] == "failure")
    assert "key=*** KEY=*** ***=yek" in failure
    assert "postgres://deploy:***@db.internal/app" in failure
    assert "[fails with ***]" in failure and "[ops-***]" in failure
    assert "2030-01-01 10:00 CET 2030-01-01 12:00 CET Europe/Berlin" in failure
