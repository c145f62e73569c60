"""Semantic validation: each rule fires with its code and position, and not on good plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from tminus.plan.loader import load_plan_text
from tminus.plan.problems import Problem

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "plan.yaml"


def lines(*rows: str) -> str:
    return "\n".join(rows) + "\n"


def problems(text: str) -> list[Problem]:
    result = load_plan_text(text, "plan.yaml")
    assert result.plan is not None, [p.format() for p in result.problems]
    return result.problems


def one(text: str, code: str, message: str = "") -> Problem:
    found = [p for p in problems(text) if p.code == code and message in p.message]
    assert len(found) == 1, [p.format() for p in problems(text)]
    return found[0]


def codes(text: str) -> set[str]:
    return {p.code for p in problems(text)}


def test_the_quickstart_has_no_problems() -> None:
    result = load_plan_text(QUICKSTART.read_text(encoding="utf-8"), "plan.yaml")
    assert result.ok
    assert result.problems == []


# (id, plan, code, severity, line, token, message substring, hint substring or None);
# the problem's column is where ``token`` first appears on ``line``.
RULES: list[tuple[str, str, str, str, int, str, str, str | None]] = [
    (
        "undefined-database",
        lines(
            "name: demo",
            "targets:",
            "  databases:",
            "    app: {kind: sqlite, url: 'sqlite:///app.db'}",
            "phases:",
            "  - name: one",
            "    on_failure: pause",
            "    steps:",
            "      - kind: sql",
            "        database: ap",
            "        statements: SELECT 1",
        ),
        "undefined-database",
        "error",
        10,
        "ap",
        "undefined database 'ap'",
        "did you mean 'app'?",
    ),
    (
        "undefined-host-or-group",
        lines(
            "name: demo",
            "targets:",
            "  hosts: {web1: {}}",
            "  groups: {web: [web1]}",
            "phases:",
            "  - name: one",
            "    on_failure: pause",
            "    steps:",
            "      - {kind: ssh, on: webs, command: uptime}",
        ),
        "undefined-host-or-group",
        "error",
        9,
        "webs",
        "undefined host or group 'webs'",
        "did you mean 'web'?",
    ),
    (
        "undefined-host-in-group",
        lines(
            "name: demo",
            "targets:",
            "  hosts: {web1: {}}",
            "  groups:",
            "    web: [web1, web2]",
            "phases:",
            "  - name: one",
        ),
        "undefined-host",
        "error",
        5,
        "web2",
        "undefined host 'web2'",
        "did you mean 'web1'?",
    ),
    (
        "undefined-router",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: traffic, router: lb, weights: {blue: 100}}",
        ),
        "undefined-router",
        "error",
        5,
        "lb",
        "undefined router 'lb'",
        "define it under 'targets.routers'",
    ),
    (
        "undefined-pool",
        lines(
            "name: demo",
            "targets:",
            "  routers:",
            "    lb: {kind: haproxy, socket: /run/ha.sock, backend: app, pools: {blue: [b1]}}",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: traffic, router: lb, weights: {bleu: 100}}",
        ),
        "undefined-pool",
        "error",
        8,
        "bleu",
        "undefined pool 'bleu'",
        "did you mean 'blue'?",
    ),
    (
        "undefined-role",
        lines(
            "name: demo",
            "roles:",
            "  deployer: {people: [ada]}",
            "phases:",
            "  - name: one",
            "    owner: deployr",
        ),
        "undefined-role",
        "error",
        6,
        "deployr",
        "undefined role 'deployr'",
        "did you mean 'deployer'?",
    ),
    (
        "undefined-approval-role",
        lines(
            "name: demo",
            "approvals:",
            "  required: [lead]",
            "phases:",
            "  - name: one",
        ),
        "undefined-role",
        "error",
        3,
        "lead",
        "undefined role 'lead'",
        "define it under 'roles'",
    ),
    (
        "undefined-check",
        lines(
            "name: demo",
            "checks:",
            "  healthy: {source: http, url: 'http://localhost/'}",
            "phases:",
            "  - name: one",
            "    verify:",
            "      - helthy",
        ),
        "undefined-check",
        "error",
        7,
        "helthy",
        "undefined check 'helthy'",
        "did you mean 'healthy'?",
    ),
    (
        "undefined-check-in-use-mapping",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    verify:",
            "      - use: nothing",
            "        expect: '== 1'",
        ),
        "undefined-check",
        "error",
        5,
        "nothing",
        "undefined check 'nothing'",
        "define it under 'checks'",
    ),
    (
        "check-cycle",
        lines(
            "name: demo",
            "checks:",
            "  a: {use: b}",
            "  b: {use: a}",
            "phases:",
            "  - name: one",
        ),
        "check-cycle",
        "error",
        3,
        "{use: b}",
        "check 'b' refers to itself",
        None,
    ),
    (
        "undefined-variable",
        lines(
            "name: demo",
            "variables: {release: v2}",
            "phases:",
            "  - name: one",
            "    on_failure: pause",
            "    steps:",
            "      - kind: run",
            "        command: deploy ${relase}",
        ),
        "undefined-variable",
        "error",
        8,
        "deploy ${relase}",
        "undefined variable 'relase'",
        "did you mean 'release'?",
    ),
    (
        "undefined-artifact",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    on_failure: pause",
            "    steps:",
            "      - {kind: run, id: build, command: make}",
            "      - kind: run",
            "        command: ship ${artifact:biuld.path}",
        ),
        "undefined-artifact",
        "error",
        8,
        "ship ",
        "no step with id 'biuld' for '${artifact:biuld.path}'",
        "did you mean 'build'?",
    ),
    (
        "bad-reference",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    description: ${vault:db/password}",
        ),
        "bad-reference",
        "error",
        4,
        "${vault",
        "unknown reference '${vault:db/password}'",
        "${env:NAME}",
    ),
    (
        "undefined-channel",
        lines(
            "name: demo",
            "notifications:",
            "  channels:",
            "    slack: {kind: slack, url: 'https://hooks.slack.com/x'}",
            "  rules:",
            "    - when: failure",
            "      channels: [slak]",
            "phases:",
            "  - name: one",
        ),
        "undefined-channel",
        "error",
        7,
        "slak",
        "undefined channel 'slak'",
        "did you mean 'slack'?",
    ),
    (
        "undefined-channel-in-step",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: notify, message: hi, channels: [ops]}",
        ),
        "undefined-channel",
        "error",
        5,
        "ops",
        "undefined channel 'ops'",
        "define it under 'notifications.channels'",
    ),
    (
        "undefined-operation",
        lines(
            "name: demo",
            "operations:",
            "  restart_import: {steps: [{kind: run, command: restart}]}",
            "troubleshooting:",
            "  - title: Import stuck",
            "    symptom: no progress",
            "    fix: restart it",
            "    operation: restart_imports",
            "phases:",
            "  - name: one",
        ),
        "undefined-operation",
        "error",
        8,
        "restart_imports",
        "undefined operation 'restart_imports'",
        "did you mean 'restart_import'?",
    ),
    (
        "duplicate-phase",
        lines(
            "name: demo",
            "phases:",
            "  - name: deploy",
            "  - name: verify",
            "  - name: deploy",
        ),
        "duplicate-phase",
        "error",
        5,
        "deploy",
        "duplicate phase name 'deploy' (also phase 1)",
        "make them unique",
    ),
    (
        "duplicate-step-id",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    on_failure: pause",
            "    steps:",
            "      - {kind: run, id: build, command: make}",
            "  - name: two",
            "    on_failure: pause",
            "    steps:",
            "      - {kind: run, id: build, command: make again}",
        ),
        "duplicate-step-id",
        "error",
        10,
        "build",
        "duplicate step id 'build'",
        "must be unique",
    ),
    (
        "duplicate-checklist-item",
        lines(
            "name: demo",
            "checklist:",
            "  - item: Notes reviewed",
            "  - item: Notes reviewed",
            "phases:",
            "  - name: one",
        ),
        "duplicate-checklist-item",
        "error",
        4,
        "item",
        "duplicate checklist item 'Notes reviewed'",
        None,
    ),
    (
        "restore-with-no-backup",
        lines(
            "name: demo",
            "targets:",
            "  databases:",
            "    app: {kind: sqlite, url: 'sqlite:///app.db'}",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: restore, from: nightly, database: app}",
        ),
        "undefined-backup",
        "error",
        8,
        "nightly",
        "no backup step with id 'nightly'",
        "add a backup step with 'id: nightly' before this one",
    ),
    (
        "restore-before-its-backup",
        lines(
            "name: demo",
            "targets:",
            "  databases:",
            "    app: {kind: sqlite, url: 'sqlite:///app.db'}",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: restore, from: bk, database: app}",
            "  - name: two",
            "    steps:",
            "      - {kind: backup, id: bk, database: app}",
        ),
        "backup-after-use",
        "error",
        8,
        "bk",
        "backup 'bk' runs after the step that uses it",
        "it is at phases[1].steps[0]",
    ),
    (
        "restore-from-a-step-that-is-not-a-backup",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    on_failure: pause",
            "    steps:",
            "      - {kind: run, id: bk, command: cp a b}",
            "      - {kind: verify_backup, from: bk}",
        ),
        "not-a-backup",
        "error",
        7,
        "bk}",
        "step 'bk' is not a backup step",
        None,
    ),
    (
        "restore-mismatch",
        lines(
            "name: demo",
            "targets:",
            "  databases: {app: {kind: sqlite, url: 'sqlite:///app.db'}}",
            "  paths: {uploads: {path: /srv/uploads}}",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: backup, id: bk, path: uploads}",
            "      - {kind: restore, from: bk, database: app}",
        ),
        "restore-mismatch",
        "error",
        9,
        "app}",
        "backup 'bk' is of a path, not a database",
        None,
    ),
    (
        "jobs-on-a-mysql-backup",
        lines(
            "name: demo",
            "targets:",
            "  databases: {shop: {kind: mysql, url: 'mysql://root@127.0.0.1/shop'}}",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: backup, id: bk, database: shop, jobs: 4}",
        ),
        "jobs-no-effect",
        "error",
        7,
        "4}",
        "'jobs' has no effect on a backup of a mysql target",
        "remove 'jobs'",
    ),
    (
        "jobs-on-a-restore-of-a-path-backup",
        lines(
            "name: demo",
            "targets:",
            "  paths: {uploads: {path: /srv/uploads}}",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: backup, id: bk, path: uploads}",
            "      - {kind: restore, from: bk, jobs: 2}",
        ),
        "jobs-no-effect",
        "error",
        8,
        "2}",
        "'jobs' has no effect on a restore of a files target",
        None,
    ),
    (
        "no-data-loss-without-snapshot",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    verify:",
            "      - {source: no_data_loss, snapshot: before}",
        ),
        "undefined-snapshot",
        "error",
        5,
        "{source",
        "no snapshot step with id 'before'",
        None,
    ),
    (
        "exceeds-window",
        lines(
            "name: demo",
            "window:",
            "  duration: 5m",
            "phases:",
            "  - name: one",
            "    estimate: 3m",
            "  - name: two",
            "    estimate: 3m",
        ),
        "exceeds-window",
        "error",
        3,
        "5m",
        "phase estimates add up to 6m, more than the 5m window",
        "widen the window",
    ),
    (
        "exceeds-downtime",
        lines(
            "name: demo",
            "window:",
            "  max_downtime: 1m",
            "maintenance: {flag_file: m.flag}",
            "phases:",
            "  - name: one",
            "    estimate: 2m",
            "    downtime: true",
            "    steps:",
            "      - {kind: maintenance, action: 'on'}",
        ),
        "exceeds-downtime",
        "error",
        3,
        "1m",
        "downtime phases are estimated at 2m, more than the allowed 1m",
        "raise window.max_downtime",
    ),
    (
        "downtime-phase-without-maintenance",
        lines(
            "name: demo",
            "phases:",
            "  - name: migrate",
            "    downtime: true",
        ),
        "downtime-without-maintenance",
        "error",
        4,
        "true",
        "phase 'migrate' is a downtime phase with no maintenance step",
        "action: on",
    ),
    (
        "maintenance-step-without-config",
        lines(
            "name: demo",
            "phases:",
            "  - name: migrate",
            "    downtime: true",
            "    steps:",
            "      - kind: maintenance",
            "        action: on",
        ),
        "maintenance-undefined",
        "error",
        6,
        "kind",
        "maintenance step with no way to switch maintenance",
        "maintenance: {flag_file: PATH}",
    ),
    (
        "wrong-router",
        lines(
            "name: demo",
            "targets:",
            "  flag_stores: {flags: {kind: flagd, path: flags.json}}",
            "  routers: {lb: {kind: flags, store: flags, flag: new-ui}}",
            "phases:",
            "  - name: one",
            "    verify:",
            "      - {source: haproxy, router: lb}",
        ),
        "wrong-router",
        "error",
        8,
        "lb}",
        "router 'lb' is not of kind haproxy",
        None,
    ),
    # --- warnings ---
    (
        "secret-in-clear-text",
        lines(
            "name: demo",
            "secrets:",
            "  api_token: s3cr3t-value",
            "phases:",
            "  - name: one",
        ),
        "secret-in-plan",
        "warning",
        3,
        "s3cr3t",
        "secret 'api_token' is written in the plan in clear text",
        "${env:NAME}",
    ),
    (
        "risky-no-approval",
        lines("name: demo", "risk: critical", "phases:", "  - name: one"),
        "risky-no-approval",
        "warning",
        2,
        "critical",
        "a critical-risk plan needs no approval",
        "approvals: {required: [ROLE]}",
    ),
    (
        "migrate-without-backup",
        lines(
            "name: demo",
            "targets:",
            "  databases: {app: {kind: sqlite, url: 'sqlite:///app.db'}}",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: migrate, database: app, tool: sql_dir, dir: migrations}",
        ),
        "migrate-without-backup",
        "warning",
        7,
        "{kind",
        "migration with no database backup before it",
        None,
    ),
    (
        "no-rollback",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: run, command: rm -rf cache}",
        ),
        "no-rollback",
        "warning",
        3,
        "name",
        "phase 'one' changes things but has nothing to roll back with",
        "on_failure: pause",
    ),
    (
        "maintenance-not-downtime",
        lines(
            "name: demo",
            "maintenance: {flag_file: m.flag}",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - {kind: maintenance, action: 'on'}",
        ),
        "maintenance-not-downtime",
        "warning",
        4,
        "name",
        "turns maintenance on but is not marked downtime",
        "downtime: true",
    ),
    (
        "canary-not-full",
        lines(
            "name: demo",
            "targets:",
            "  routers:",
            "    lb: {kind: haproxy, socket: s, backend: b, pools: {blue: [a], green: [b]}}",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - kind: canary",
            "        router: lb",
            "        stable: blue",
            "        canary: green",
            "        steps: [{weight: 10}, {weight: 50}]",
        ),
        "canary-not-full",
        "warning",
        12,
        "[",
        "the last canary step is not 100%",
        None,
    ),
    (
        "delayed-first-phase",
        lines("name: demo", "phases:", "  - name: later", "    after: 7d"),
        "delayed-first-phase",
        "warning",
        4,
        "7d",
        "the first phase is delayed",
        None,
    ),
]


@pytest.mark.parametrize(
    ("text", "code", "severity", "line", "token", "message", "hint"),
    [pytest.param(*case[1:], id=case[0]) for case in RULES],
)
def test_rule(
    text: str,
    code: str,
    severity: str,
    line: int,
    token: str,
    message: str,
    hint: str | None,
) -> None:
    column = text.splitlines()[line - 1].index(token) + 1
    p = one(text, code, message)
    assert p.severity == severity
    assert p.file == "plan.yaml"
    assert (p.line, p.column) == (line, column), p.format()
    assert message in p.message, p.format()
    if hint is not None:
        assert p.hint is not None and hint in p.hint, p.format()


# --- and the same plans, fixed, are clean ----------------------------------------------------


def test_a_backup_before_the_restore_is_fine() -> None:
    text = lines(
        "name: demo",
        "targets:",
        "  databases:",
        "    app: {kind: sqlite, url: 'sqlite:///app.db'}",
        "phases:",
        "  - name: one",
        "    steps:",
        "      - {kind: backup, id: bk, database: app}",
        "  - name: two",
        "    steps:",
        "      - {kind: restore, from: bk, database: app}",
    )
    assert not codes(text) & {"backup-after-use", "undefined-backup", "restore-mismatch"}


def test_jobs_on_postgres_backups_and_restores_is_fine() -> None:
    """``jobs`` has an effect on PostgreSQL's pg_dump and pg_restore; the default (not
    written) never counts as set."""
    text = lines(
        "name: demo",
        "targets:",
        "  databases:",
        "    pg: {kind: postgres, url: 'postgresql://app@db/app'}",
        "    lite: {kind: sqlite, url: 'sqlite:///app.db'}",
        "phases:",
        "  - name: one",
        "    steps:",
        "      - {kind: backup, id: bk, database: pg, jobs: 4}",
        "      - {kind: backup, id: bk2, database: lite}",
        "  - name: two",
        "    steps:",
        "      - {kind: restore, from: bk, jobs: 4}",
        "      - {kind: restore, from: bk2}",
    )
    assert "jobs-no-effect" not in codes(text)


def test_a_backup_later_in_the_same_phase_is_after_use() -> None:
    text = lines(
        "name: demo",
        "targets:",
        "  databases:",
        "    app: {kind: sqlite, url: 'sqlite:///app.db'}",
        "phases:",
        "  - name: one",
        "    steps:",
        "      - {kind: restore, from: bk, database: app}",
        "      - {kind: backup, id: bk, database: app}",
    )
    assert "backup-after-use" in codes(text)


def test_a_restore_in_rollback_may_use_the_phase_backup() -> None:
    text = lines(
        "name: demo",
        "targets:",
        "  databases:",
        "    app: {kind: sqlite, url: 'sqlite:///app.db'}",
        "phases:",
        "  - name: one",
        "    steps:",
        "      - {kind: backup, id: bk, database: app}",
        "      - kind: migrate",
        "        database: app",
        "        tool: command",
        "        up: ./migrate up",
        "        on_rollback: restore",
        "        backup: bk",
        "    rollback:",
        "      - {kind: restore, from: bk, database: app}",
    )
    found = codes(text)
    assert not found & {"backup-after-use", "undefined-backup", "migrate-without-backup"}


def test_a_backup_in_rollback_steps_is_not_visible_to_later_phases() -> None:
    text = lines(
        "name: demo",
        "targets:",
        "  databases:",
        "    app: {kind: sqlite, url: 'sqlite:///app.db'}",
        "phases:",
        "  - name: one",
        "    rollback:",
        "      - {kind: backup, id: bk, database: app}",
        "  - name: two",
        "    steps:",
        "      - {kind: restore, from: bk, database: app}",
    )
    assert "backup-after-use" in codes(text)


def test_estimates_within_the_window_are_fine_and_delayed_phases_do_not_count() -> None:
    text = lines(
        "name: demo",
        "window: {duration: 5m}",
        "phases:",
        "  - name: one",
        "    estimate: 3m",
        "  - name: two",
        "    estimate: 2m",
        "  - name: cleanup",
        "    after: 7d",
        "    estimate: 1h",
    )
    assert "exceeds-window" not in codes(text)


def test_estimates_without_a_window_are_not_checked() -> None:
    text = lines("name: demo", "phases:", "  - name: one", "    estimate: 10h")
    assert codes(text) == set()


def test_no_estimates_at_all_is_a_warning() -> None:
    text = lines("name: demo", "window: {duration: 5m}", "phases:", "  - name: one")
    p = one(text, "no-estimates")
    assert p.severity == "warning"


def test_secrets_from_the_environment_or_a_file_are_fine() -> None:
    text = lines(
        "name: demo",
        "secrets:",
        "  a: ${env:TOKEN}",
        "  b: ${env:TOKEN:-dev-token}",
        "  c: ${file:~/.token}",
        "phases:",
        "  - name: one",
    )
    assert "secret-in-plan" not in codes(text)


def test_a_secret_made_only_of_variables_is_still_clear_text() -> None:
    text = lines(
        "name: demo",
        "variables: {pw: hunter2}",
        "secrets: {a: '${pw}'}",
        "phases:",
        "  - name: one",
    )
    assert one(text, "secret-in-plan").path == ("secrets", "a")


def test_a_high_risk_plan_with_approvals_is_fine() -> None:
    text = lines(
        "name: demo",
        "risk: high",
        "roles: {lead: {people: [ada]}}",
        "approvals: {required: [lead]}",
        "phases:",
        "  - name: one",
    )
    assert codes(text) == set()


def test_escaped_references_builtins_and_operation_params_are_not_variables() -> None:
    text = lines(
        "name: demo",
        "operations:",
        "  restart:",
        "    params: {service: {required: true}}",
        "    steps:",
        "      - {kind: run, command: 'systemctl restart ${service}'}",
        "phases:",
        "  - name: one",
        "    on_failure: pause",
        "    steps:",
        "      - kind: run",
        "        command: echo $${literal} ${deploy_id} ${plan_name} ${env:HOME}",
    )
    assert codes(text) == set()


def test_an_inventory_makes_host_names_lenient() -> None:
    text = lines(
        "name: demo",
        "targets: {inventory: hosts.ini}",
        "phases:",
        "  - name: one",
        "    on_failure: pause",
        "    steps:",
        "      - {kind: ssh, on: webservers, command: uptime}",
    )
    assert "undefined-host-or-group" not in codes(text)


def test_undefined_names_list_what_is_defined_when_nothing_is_close() -> None:
    text = lines(
        "name: demo",
        "roles: {deployer: {}, reviewer: {}}",
        "phases:",
        "  - name: one",
        "    owner: zzz",
    )
    p = one(text, "undefined-role")
    assert p.hint == "define it under 'roles' (defined: deployer, reviewer)"


def test_validation_problems_are_sorted_by_nothing_but_all_have_positions() -> None:
    text = lines(
        "name: demo",
        "risk: high",
        "window: {duration: 1m}",
        "phases:",
        "  - name: a",
        "    estimate: 2m",
        "    owner: nobody",
        "  - name: a",
    )
    found = problems(text)
    assert {"risky-no-approval", "exceeds-window", "undefined-role", "duplicate-phase"} <= {
        p.code for p in found
    }
    assert all(p.line is not None and p.line >= 1 for p in found)


def test_a_canary_held_below_100_percent_on_purpose_is_fine() -> None:
    text = lines(
        "name: demo",
        "targets:",
        "  routers:",
        "    lb: {kind: haproxy, socket: s, backend: b, pools: {blue: [a], green: [b]}}",
        "phases:",
        "  - name: one",
        "    steps:",
        "      - kind: canary",
        "        router: lb",
        "        stable: blue",
        "        canary: green",
        "        promote: false",
        "        steps: [{weight: 5, pause: 2d}]",
    )
    assert "canary-not-full" not in codes(text)
    assert "canary-not-full" in codes(text.replace("promote: false", "promote: true"))
