"""``tminus check`` on notifications (issue #16): message templates (an unknown variable or
attribute, a syntax error), ``to_roles`` (an unknown role, a role without an email contact),
rules that would never fire, an unused channel (a warning), ``rate_limit`` and
``required_within``. Each problem with its file:line:column and a hint.

Mutations tried: ``_templates`` not called in ``_notifications`` → the template tests fail
(no ``bad-template``); ``_never_fire`` treating every plan as having a window (``has_window =
True``) → ``test_a_window_rule_without_a_window...`` fails; the ``to_roles`` contact test
dropping its ``"@" not in contact`` → ``test_to_roles...`` fails (no ``role-without-email``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tminus.plan.loader import load_plan_text
from tminus.plan.problems import Problem

BASE = """\
tminus: 1
name: demo
variables:
  release: "1.2"
roles:
  dba:
    contact: dba@example.com
  lead:
    contact: "#release-leads"
notifications:
  channels:
    hook:
      kind: webhook
      url: http://127.0.0.1:9/hook
  rules:
{rules}
phases:
  - name: one
    on_failure: pause
    steps:
      - kind: run
        command: "true"
"""


def problems(rules: str, base: str = BASE) -> list[Problem]:
    result = load_plan_text(base.replace("{rules}", rules), "plan.yaml")
    assert result.plan is not None, [p.format() for p in result.problems]
    return result.problems


def only(found: list[Problem], code: str) -> Problem:
    hits = [p for p in found if p.code == code]
    assert len(hits) == 1, [p.format() for p in found]
    return hits[0]


def test_an_unknown_template_variable_is_an_error_with_its_place_and_a_hint() -> None:
    p = only(
        problems('    - when: phase_start\n      message: "{{ phse.name }} started"'),
        "bad-template",
    )
    assert p.severity == "error"
    assert "unknown variable 'phse'" in p.message
    assert p.hint == "did you mean 'phase'?"
    assert (p.file, p.line, p.column) == ("plan.yaml", 17, 16)  # the message's value


def test_an_unknown_attribute_and_an_undefined_plan_variable_are_errors() -> None:
    found = problems(
        "    - when: phase_end\n"
        '      message: "{{ phase.nmae }} of {{ vars.relase }} {{ deploy.id }} '
        '{{ vars.release }} {{ vars.deploy_id }}"'
    )
    said = {(p.message.split(": ", 1)[1], p.hint) for p in found if p.code == "bad-template"}
    assert said == {
        ("'phase' has no 'nmae'", "did you mean 'name'?"),
        ("undefined variable 'vars.relase'", "did you mean 'release'?"),
    }


def test_a_template_syntax_error_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    import subprocess

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        BASE.replace("{rules}", '    - when: success\n      message: "{% if reason %}done"')
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tminus", "check", str(plan)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert "plan.yaml:17:16: error[bad-template]: message template, line 1:" in out
    assert "endif" in out


def test_a_message_without_template_syntax_is_not_parsed_as_one() -> None:
    found = problems('    - when: success\n      message: "done: ${release} {not a template}"')
    assert not [p for p in found if p.code == "bad-template"]


def test_to_roles_needs_known_roles_with_an_email_contact() -> None:
    base = BASE.replace(
        "      url: http://127.0.0.1:9/hook\n",
        "      url: http://127.0.0.1:9/hook\n"
        "    mail:\n"
        "      kind: email\n"
        "      smtp: 127.0.0.1:25\n"
        "      security: none\n"
        "      to_roles: [dba, lead, dbas]\n",
    )
    found = problems("    - when: success", base)
    missing = only(found, "undefined-role")
    assert "'dbas'" in missing.message and missing.hint == "did you mean 'dba'?"
    assert missing.line == 19
    no_mail = only(found, "role-without-email")
    assert "role 'lead'" in no_mail.message and "#release-leads" in no_mail.message
    assert no_mail.hint is not None and "roles.lead.contact" in no_mail.hint


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        ("    - when: before_window\n      before: 24h", "the plan has no window"),
        ("    - when: window_start", "the plan has no window"),
        ("    - when: during\n      every: 30m", "the plan has no window"),
        ("    - when: approval_needed", "asks for no approval"),
        ("    - when: watch_critical", "the plan has no watch"),
        ("    - when: watch_warn", "nothing can report a WARN"),
    ],
)
def test_a_window_rule_without_a_window_and_other_rules_that_never_fire(
    rule: str, why: str
) -> None:
    p = only(problems(rule), "rule-never-fires")
    assert p.severity == "error" and why in p.message
    assert p.line == 16 and p.hint


def test_the_same_rules_fire_when_the_plan_gives_them_something() -> None:
    base = BASE.replace(
        "phases:\n",
        "window:\n  start: TBD\n  duration: 2h\n"
        "approvals:\n  required: [dba]\n"
        "watch:\n  schedule:\n    - {every: 1m, for: 10m}\n"
        "phases:\n",
    )
    rules = (
        "    - when: before_window\n      before: 24h\n"
        "    - when: window_start\n"
        "    - when: during\n      every: 30m\n"
        "    - when: approval_needed\n"
        "    - when: watch_critical\n"
        "    - when: watch_warn"
    )
    assert not [p for p in problems(rules, base) if p.code == "rule-never-fires"]


def test_a_channel_nothing_sends_to_is_a_warning() -> None:
    base = BASE.replace(
        "      url: http://127.0.0.1:9/hook\n",
        "      url: http://127.0.0.1:9/hook\n    spare:\n      kind: log\n",
    )
    p = only(problems("    - when: success\n      channels: [hook]", base), "unused-channel")
    assert p.severity == "warning" and "'spare'" in p.message
    # a rule without channels sends to every channel: none is unused
    assert not [q for q in problems("    - when: success", base) if q.code == "unused-channel"]


def test_rate_limit_and_required_within_are_checked() -> None:
    bad = BASE.replace(
        "      url: http://127.0.0.1:9/hook\n",
        "      url: http://127.0.0.1:9/hook\n      rate_limit: 20 per minute\n",
    )
    result = load_plan_text(bad.replace("{rules}", "    - when: success"), "plan.yaml")
    assert result.plan is None
    assert any("write N/DURATION" in p.message for p in result.problems)
    lone = BASE.replace(
        "      url: http://127.0.0.1:9/hook\n",
        "      url: http://127.0.0.1:9/hook\n      required_within: 30s\n",
    )
    result = load_plan_text(lone.replace("{rules}", "    - when: success"), "plan.yaml")
    assert result.plan is None
    assert any("required_within" in p.message for p in result.problems)
    good = BASE.replace(
        "      url: http://127.0.0.1:9/hook\n",
        "      url: http://127.0.0.1:9/hook\n      rate_limit: 20/1m\n"
        "      required: true\n      required_within: 30s\n",
    )
    result = load_plan_text(good.replace("{rules}", "    - when: success"), "plan.yaml")
    assert result.plan is not None
    hook = result.plan.notifications.channels["hook"]
    limit = hook.effective_rate_limit()
    assert limit is not None and (limit.count, limit.per.total_seconds()) == (20, 60)
