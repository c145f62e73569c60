"""The loader: bad plans become problems with file:line:column, a code and a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from tminus.plan import loader
from tminus.plan.loader import MAX_NODES, load_plan, load_plan_text, parse_yaml
from tminus.plan.problems import Problem
from tminus.plan.steps import MaintenanceStep, RunStep

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart" / "plan.yaml"

#: A minimal valid plan; PHASES starts at line 1 of whatever is put before it.
PHASES = """\
phases:
  - name: one
    steps:
      - kind: run
        command: echo hi
"""


def lines(*rows: str) -> str:
    return "\n".join(rows) + "\n"


def errors(text: str) -> list[Problem]:
    result = load_plan_text(text, "plan.yaml")
    assert result.plan is None or not result.ok
    found = [p for p in result.problems if p.severity == "error"]
    assert found, result.problems
    assert all(p.file == "plan.yaml" for p in found)
    return found


# (id, text, code, line, column, message substring, hint substring or None)
BAD_PLANS: list[tuple[str, str, str, int, int | None, str, str | None]] = [
    # --- YAML syntax ---
    (
        "bad-indentation",
        lines("name: demo", "phases:", "  - name: one", "   steps: []"),
        "yaml",
        4,
        4,
        "invalid YAML: expected <block end>",
        "check indentation",
    ),
    (
        "mapping-in-scalar",
        lines("name: demo", "  phases: x"),
        "yaml",
        2,
        9,
        "mapping values are not allowed here",
        "a value with ': ' or '#' needs quotes",
    ),
    (
        "unclosed-quote",
        lines('name: "demo', "phases: []"),
        "yaml",
        3,
        1,
        "while scanning a quoted scalar",
        "quoting",
    ),
    (
        "tab-indentation",
        lines("name: demo", "phases:", "\t- name: one"),
        "yaml",
        3,
        1,
        "found character '\\t'",
        "tabs",
    ),
    (
        "unclosed-flow",
        lines("name: demo", "phases: [{name: one}", "risk: low"),
        "yaml",
        3,
        1,
        "expected ',' or ']'",
        None,
    ),
    (
        "two-documents",
        lines("name: a", "---", "name: b"),
        "yaml",
        2,
        1,
        "expected a single document",
        None,
    ),
    (
        "unknown-tag",
        lines("name: !secret demo", *PHASES.splitlines()),
        "yaml",
        1,
        7,
        "the tag '!secret' is not supported in a plan",
        None,
    ),
    (
        "bad-explicit-int",
        lines("name: demo", "version: !!int abc", *PHASES.splitlines()),
        "yaml",
        2,
        10,
        "cannot read this value",
        None,
    ),
    (
        "recursive-alias",
        lines("name: demo", "variables: &v", "  x: *v", *PHASES.splitlines()),
        "yaml",
        2,
        12,
        "this anchored value contains an alias to itself",
        None,
    ),
    (
        "nul-character",
        "name: de\x00mo\n" + PHASES,
        "yaml",
        1,
        9,
        "character U+0000 is not allowed",
        "control character",
    ),
    # --- duplicate keys ---
    (
        "duplicate-top-level-key",
        lines("name: demo", "risk: low", "name: other", *PHASES.splitlines()),
        "duplicate-key",
        3,
        1,
        "duplicate key 'name' (first defined at line 1)",
        "each key may appear once",
    ),
    (
        "duplicate-step-key",
        PHASES + "        command: echo again\n",
        "duplicate-key",
        6,
        9,
        "duplicate key 'command' (first defined at line 5)",
        None,
    ),
    (
        "duplicate-flow-key",
        lines("name: demo", "window: {duration: 5m, duration: 6m}", *PHASES.splitlines()),
        "duplicate-key",
        2,
        24,
        "duplicate key 'duration'",
        None,
    ),
    # --- unknown keys, at several depths ---
    (
        "unknown-top-level-key",
        lines("name: demo", "enviroment: prod", *PHASES.splitlines()),
        "unknown-key",
        2,
        1,
        "unknown key 'enviroment'",
        "did you mean 'environment'?",
    ),
    (
        "unknown-window-key",
        lines("name: demo", "window:", "  durration: 5m", *PHASES.splitlines()),
        "unknown-key",
        3,
        3,
        "unknown key 'durration'",
        "did you mean 'duration'?",
    ),
    (
        "unknown-phase-key",
        lines("name: demo", "phases:", "  - name: one", "    stpes: []"),
        "unknown-key",
        4,
        5,
        "unknown key 'stpes'",
        "did you mean 'steps'?",
    ),
    (
        "unknown-step-key",
        "name: demo\n" + PHASES + "        timout: 5m\n",
        "unknown-key",
        7,
        9,
        "unknown key 'timout'",
        "did you mean 'timeout'?",
    ),
    (
        "unknown-check-key",
        lines(
            "name: demo",
            "checks:",
            "  up:",
            "    source: http",
            "    url: http://localhost/",
            "    expct: '== 200'",
            *PHASES.splitlines(),
        ),
        "unknown-key",
        6,
        5,
        "unknown key 'expct'",
        "did you mean 'expect'?",
    ),
    (
        "unknown-target-key",
        lines(
            "name: demo",
            "targets:",
            "  databases:",
            "    app:",
            "      kind: sqlite",
            "      url: sqlite:///app.db",
            "      tabels: [users]",
            *PHASES.splitlines(),
        ),
        "unknown-key",
        7,
        7,
        "unknown key 'tabels'",
        "did you mean 'tables'?",
    ),
    (
        "unknown-key-no-near-match",
        lines("name: demo", "window:", "  zzz: 1", *PHASES.splitlines()),
        "unknown-key",
        3,
        3,
        "unknown key 'zzz'",
        "allowed keys here: start, timezone, duration, max_downtime, on_overrun, notes",
    ),
    (
        "unknown-key-in-check-use",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    verify:",
            "      - {use: up, source: http}",
        ),
        "unknown-key",
        5,
        19,
        "unknown key 'source'",
        "allowed keys here: use, name, expect, warn, critical",
    ),
    # --- kinds and sources ---
    (
        "unknown-step-kind",
        lines("name: demo", "phases:", "  - name: one", "    steps:", "      - kind: shell"),
        "unknown-kind",
        5,
        15,
        "unknown step kind 'shell'",
        "known: run, ssh",
    ),
    (
        "near-miss-step-kind",
        lines("name: demo", "phases:", "  - name: one", "    steps:", "      - kind: migrat"),
        "unknown-kind",
        5,
        15,
        "unknown step kind 'migrat'",
        "did you mean 'migrate'?",
    ),
    (
        "unknown-check-source",
        lines(
            "name: demo",
            "checks:",
            "  up:",
            "    source: promethues",
            "    query: up",
            *PHASES.splitlines(),
        ),
        "unknown-source",
        4,
        13,
        "unknown check source 'promethues'",
        "did you mean 'prometheus'?",
    ),
    (
        "unknown-router-kind",
        lines(
            "name: demo",
            "targets:",
            "  routers:",
            "    lb: {kind: ngnix}",
            *PHASES.splitlines(),
        ),
        "unknown-kind",
        4,
        16,
        "unknown router kind 'ngnix'",
        "did you mean 'nginx'?",
    ),
    (
        "step-without-kind",
        lines("name: demo", "phases:", "  - name: one", "    steps:", "      - command: ls"),
        "missing-key",
        5,
        9,
        "missing required key 'kind'",
        "'kind' is one of: run, ssh, http",
    ),
    (
        "check-without-source",
        lines("name: demo", "phases:", "  - name: one", "    verify:", "      - url: http://x/"),
        "missing-key",
        5,
        9,
        "missing required key 'source'",
        "'source' is one of: command, http, sql",
    ),
    # --- missing keys ---
    (
        "missing-name",
        PHASES,
        "missing-key",
        1,
        1,
        "missing required key 'name'",
        None,
    ),
    (
        "missing-phases",
        lines("name: demo", "risk: low"),
        "missing-key",
        1,
        1,
        "missing required key 'phases'",
        None,
    ),
    (
        "missing-step-field",
        lines("name: demo", "phases:", "  - name: one", "    steps:", "      - kind: run"),
        "missing-key",
        5,
        9,
        "missing required key 'command'",
        None,
    ),
    (
        "missing-aliased-field",
        lines("name: demo", "phases:", "  - name: one", "    steps:", "      - kind: restore"),
        "missing-key",
        5,
        9,
        "missing required key 'from'",
        "The id of the backup step",
    ),
    (
        "missing-watch-for",
        lines("name: demo", "watch:", "  schedule:", "    - every: 1m", *PHASES.splitlines()),
        "missing-key",
        4,
        7,
        "missing required key 'for'",
        None,
    ),
    # --- wrong types ---
    (
        "phases-not-a-list",
        lines("name: demo", "phases: all of them"),
        "wrong-type",
        2,
        9,
        "Input should be a valid list (got 'all of them')",
        None,
    ),
    (
        "phases-empty-value-is-null",
        lines("name: demo", "phases:"),
        "wrong-type",
        2,
        8,
        "(got None)",
        None,
    ),
    (
        "port-not-a-number",
        lines(
            "name: demo",
            "targets:",
            "  hosts:",
            "    web1:",
            "      port: ssh",
            *PHASES.splitlines(),
        ),
        "wrong-type",
        5,
        13,
        "valid integer",
        None,
    ),
    (
        "window-not-a-mapping",
        lines("name: demo", "window: tomorrow", *PHASES.splitlines()),
        "wrong-type",
        2,
        9,
        "expected a mapping of keys (got 'tomorrow')",
        "keys here: start, timezone",
    ),
    (
        "variable-of-no-allowed-type",
        lines("name: demo", "variables:", "  hosts: [a, b]", *PHASES.splitlines()),
        "wrong-type",
        3,
        10,
        "expected a string, an integer, a number or a boolean (got ['a', 'b'])",
        None,
    ),
    (
        "http-status-wrong-type",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - kind: http",
            "        url: http://x/",
            "        expect: {status: ok}",
        ),
        "wrong-type",
        7,
        26,
        "expected an integer or a list (got 'ok')",
        None,
    ),
    (
        "bad-check-reference",
        lines("name: demo", "phases:", "  - name: one", "    verify:", "      - 42"),
        "invalid-check",
        5,
        9,
        "expected a check: a name, {use: NAME} or a mapping with 'source'",
        None,
    ),
    # --- bad values ---
    (
        "bad-duration",
        lines("name: demo", "window:", "  duration: 2 hours", *PHASES.splitlines()),
        "invalid",
        3,
        13,
        "'2 hours' is not a duration",
        None,
    ),
    (
        "too-long-duration",
        lines("name: demo", "window:", "  duration: 999999999999d", *PHASES.splitlines()),
        "invalid",
        3,
        13,
        "too long for a duration",
        None,
    ),
    (
        "integer-too-large-for-a-duration",
        lines("name: demo", "window:", "  duration: " + "9" * 400, *PHASES.splitlines()),
        "invalid",
        3,
        13,
        "is too long for a duration",
        None,
    ),
    (
        "bad-condition",
        lines(
            "name: demo",
            "checks:",
            "  up:",
            "    source: http",
            "    url: http://x/",
            "    expect: '=< 3'",
            *PHASES.splitlines(),
        ),
        "invalid",
        6,
        13,
        "'=< 3' is not a condition",
        None,
    ),
    (
        "bad-canary-pause-points-at-pause",
        lines(
            "name: demo",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - kind: canary",
            "        router: lb",
            "        stable: blue",
            "        canary: green",
            "        steps:",
            "          - weight: 10",
            "            pause: forever",
        ),
        "invalid",
        11,
        20,
        "'forever' is not a duration",
        None,
    ),
    (
        "bad-literal",
        lines("name: demo", "risk: hihg", *PHASES.splitlines()),
        "invalid",
        2,
        7,
        "'hihg' is not allowed here; expected 'very_low', 'low'",
        "did you mean 'high'?",
    ),
    (
        "maintenance-yes-is-a-string",
        lines(
            "name: demo",
            "maintenance: {flag_file: m.flag}",
            "phases:",
            "  - name: one",
            "    steps:",
            "      - kind: maintenance",
            "        action: yes",
        ),
        "invalid",
        7,
        17,
        "'yes' is not allowed here; expected 'on' or 'off'",
        None,
    ),
    (
        "bad-time-zone",
        lines("name: demo", "window:", "  timezone: Mars/Olympus", *PHASES.splitlines()),
        "invalid",
        3,
        13,
        "unknown time zone 'Mars/Olympus'",
        None,
    ),
    (
        "model-rule",
        lines("name: demo", "phases:", "  - name: one", "    steps:", "      - {kind: wait}"),
        "invalid",
        5,
        9,
        "a wait step needs 'duration' or 'until'",
        None,
    ),
    (
        "empty-phase-list",
        lines("name: demo", "phases: []"),
        "invalid",
        2,
        9,
        "at least 1 item",
        None,
    ),
    (
        "unsupported-version",
        "tminus: 2\nname: demo\n" + PHASES,
        "invalid",
        1,
        9,
        "2 is not allowed here; expected 1",
        None,
    ),
    # --- names ---
    (
        "invalid-plan-name",
        "name: my deploy\n" + PHASES,
        "invalid",
        1,
        7,
        "'my deploy' is not a valid name",
        "names start with a letter or _",
    ),
    (
        "invalid-role-name-points-at-key",
        lines("name: demo", "roles:", "  release manager: {}", *PHASES.splitlines()),
        "invalid",
        3,
        3,
        "'release manager' is not a valid name",
        "names start with a letter",
    ),
    # --- the document as a whole ---
    ("empty-file", "", "empty", 1, 1, "the plan is empty", "needs at least 'name' and 'phases'"),
    ("only-comments", "# nothing yet\n", "empty", 1, 1, "the plan is empty", None),
    (
        "a-list-not-a-mapping",
        "- name: demo\n",
        "wrong-type",
        1,
        1,
        "a plan is a mapping of keys",
        "start the file with 'name: my-deploy'",
    ),
    ("a-scalar-not-a-mapping", "just text\n", "wrong-type", 1, 1, "a plan is a mapping", None),
]


@pytest.mark.parametrize(
    ("text", "code", "line", "column", "message", "hint"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_PLANS],
)
def test_bad_plan(
    text: str, code: str, line: int, column: int | None, message: str, hint: str | None
) -> None:
    found = errors(text)
    matching = [p for p in found if p.code == code and message in p.message]
    assert matching, "\n".join(p.format() for p in found)
    p = matching[0]
    assert (p.line, p.column) == (line, column), p.format()
    if hint is not None:
        assert p.hint is not None and hint in p.hint, p.format()


def test_there_are_many_bad_plans() -> None:
    assert len({case[2] for case in BAD_PLANS}) >= 8
    assert len(BAD_PLANS) >= 25


def test_every_problem_of_a_bad_plan_is_formatted_with_its_position() -> None:
    text = lines("name: demo", "window:", "  durration: 5m", *PHASES.splitlines())
    (p,) = errors(text)
    assert p.format() == (
        "plan.yaml:3:3: error[unknown-key]: unknown key 'durration'\n"
        "    at window.durration\n"
        "    hint: did you mean 'duration'?"
    )


def test_a_union_reports_one_problem_per_value() -> None:
    text = lines("name: demo", "variables:", "  hosts: [a, b]", *PHASES.splitlines())
    assert len(errors(text)) == 1


def test_several_errors_are_all_reported_in_document_order() -> None:
    text = lines(
        "name: demo",
        "risk: hihg",
        "window:",
        "  durration: 5m",
        "phases:",
        "  - name: one",
        "    steps:",
        "      - kind: shell",
    )
    found = errors(text)
    assert sorted((p.line, p.code) for p in found) == [
        (2, "invalid"),
        (4, "unknown-key"),
        (8, "unknown-kind"),
    ]


def test_an_alias_bomb_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_NODES >= 100_000  # real plans stay far below it
    monkeypatch.setattr(loader, "MAX_NODES", 5000)  # the same code path, quicker
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 10**9 values once expanded
        prev = f"*a{i - 1}"
        rows.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    found = errors(lines("name: demo", *rows))
    assert found[0].code == "yaml"
    assert "more than 5000 values (aliases repeated?)" in found[0].message


def test_aliases_that_do_not_recurse_are_fine() -> None:
    text = lines(
        "name: demo",
        "variables: {a: &v one}",
        "phases:",
        "  - &p {name: one, description: *v}",
        "  - {name: two, description: *v}",
    )
    result = load_plan_text(text, "plan.yaml")
    assert result.plan is not None, result.problems
    assert [p.description for p in result.plan.phases] == ["one", "one"]


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    text = "name: demo\nvariables: " + "[" * 1200 + "]" * 1200 + "\n"
    (p,) = errors(text)
    assert p.code == "yaml"
    assert "nested too deeply" in p.message


# --- YAML 1.2 scalars ------------------------------------------------------------------------


def test_on_off_yes_no_are_strings() -> None:
    text = lines(
        "name: demo",
        "maintenance: {flag_file: m.flag}",
        "variables: {a: yes, b: no, c: on, d: off, e: true, f: 1:30, g: 2026-01-29, h: 0o17}",
        "phases:",
        "  - name: one",
        "    downtime: true",
        "    steps:",
        "      - kind: maintenance",
        "        action: on",
        "      - kind: maintenance",
        "        action: off",
    )
    result = load_plan_text(text, "plan.yaml")
    assert result.ok, result.problems
    assert result.plan is not None
    assert result.plan.variables == {
        "a": "yes",
        "b": "no",
        "c": "on",
        "d": "off",
        "e": True,
        "f": "1:30",
        "g": "2026-01-29",
        "h": 15,
    }
    steps = result.plan.phases[0].steps
    assert isinstance(steps[0], MaintenanceStep) and steps[0].action == "on"
    assert isinstance(steps[1], MaintenanceStep) and steps[1].action == "off"


def test_empty_values_are_null() -> None:
    data, _, problems = parse_yaml("a:\nb: ~\nc: null\nd: ''\n")
    assert problems == []
    assert data == {"a": None, "b": None, "c": None, "d": ""}


def test_merge_keys_and_anchors_work() -> None:
    text = lines(
        "name: demo",
        "phases:",
        "  - name: one",
        "    steps:",
        "      - &echo {kind: run, command: echo hi, timeout: 5s}",
        "      - <<: *echo",
        "        command: echo bye",
    )
    result = load_plan_text(text, "plan.yaml")
    assert result.plan is not None, result.problems
    second = result.plan.phases[0].steps[1]
    assert isinstance(second, RunStep)
    assert second.command == "echo bye"
    assert second.timeout is not None and second.timeout.total_seconds() == 5


def test_retries_shorthand_and_mapping() -> None:
    text = lines(
        "name: demo",
        "phases:",
        "  - name: one",
        "    steps:",
        "      - {kind: run, command: a, retries: 2}",
        "      - kind: run",
        "        command: b",
        "        retries: {attempts: 4, delay: 2s, backoff: 3, max_delay: 1m}",
    )
    result = load_plan_text(text, "plan.yaml")
    assert result.plan is not None, result.problems
    first, second = result.plan.phases[0].steps
    assert first.retries is not None and first.retries.attempts == 3
    assert second.retries is not None
    assert (second.retries.attempts, second.retries.backoff) == (4, 3.0)
    assert second.retries.delay.total_seconds() == 2
    assert second.retries.max_delay.total_seconds() == 60


# --- files -----------------------------------------------------------------------------------


def test_the_quickstart_loads() -> None:
    result = load_plan(QUICKSTART)
    assert result.ok
    assert result.problems == []
    assert result.plan is not None and result.plan.name == "quickstart"


def test_the_complete_example_of_the_docs_loads() -> None:
    doc = (ROOT / "docs" / "plan-format.md").read_text(encoding="utf-8")
    example = doc.split("## A complete small plan", 1)[1].split("```yaml\n", 1)[1]
    example = example.split("```", 1)[0]
    result = load_plan_text(example, "plan-format.md")
    assert result.ok, [p.format() for p in result.problems]
    assert result.problems == []


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    result = load_plan(path)
    assert result.plan is None
    (p,) = result.problems
    assert (p.code, p.file) == ("io", str(path))
    assert "cannot read plan" in p.message
    assert "No such file" in p.message


def test_a_directory_is_not_a_plan(tmp_path: Path) -> None:
    result = load_plan(tmp_path)
    (p,) = result.problems
    assert p.code == "io"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: demo\nphases:\n  - name: caf\xe9\n")
    result = load_plan(path)
    assert result.plan is None
    (p,) = result.problems
    assert (p.code, p.line, p.file) == ("encoding", 3, str(path))
    assert "not UTF-8" in p.message


def test_file_problems_carry_the_path(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("name: demo\nphasess: []\n", encoding="utf-8")
    result = load_plan(path)
    assert {p.file for p in result.problems} == {str(path)}
    assert any(p.code == "unknown-key" and p.line == 2 for p in result.problems)


def test_semantic_false_skips_validation() -> None:
    text = lines("name: demo", "risk: high", *PHASES.splitlines())
    assert any(p.code == "risky-no-approval" for p in load_plan_text(text).problems)
    assert load_plan_text(text, semantic=False).problems == []
