"""`tminus check` and `tminus schema` from the command line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tminus.cli.app import cli

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart" / "plan.yaml"

BAD = """\
name: demo
window:
  durration: 5m
phases:
  - name: one
    steps:
      - kind: shell
"""

WARNS = """\
name: demo
risk: high
phases:
  - name: one
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_good_plan_passes(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check", str(QUICKSTART)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"{QUICKSTART}: ok — plan 'quickstart' (local), 4 phases, 11 steps"
    )
    assert result.stderr == ""


def test_errors_are_printed_as_file_line_col_code_message_and_hint(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = write(tmp_path, "bad.yaml", BAD)
    result = runner.invoke(cli, ["check", path])
    assert result.exit_code == 2
    out = result.stderr
    assert f"{path}:3:3: error[unknown-key]: unknown key 'durration'\n" in out
    assert "    at window.durration\n    hint: did you mean 'duration'?\n" in out
    assert f"{path}:7:15: error[unknown-kind]: unknown step kind 'shell'\n" in out
    assert f"{path}: 2 error(s), 0 warning(s)" in out
    heads = re.findall(r"^(\S+):(\d+):(\d+): (error|warning)\[([a-z-]+)\]: ", out, re.M)
    assert [(int(line), code) for _, line, _, _, code in heads] == [
        (3, "unknown-key"),
        (7, "unknown-kind"),
    ]
    assert "Traceback" not in result.output


def test_warnings_only_exit_0_and_are_printed(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "warn.yaml", WARNS)
    result = runner.invoke(cli, ["check", path])
    assert result.exit_code == 0, result.output
    assert f"{path}:2:7: warning[risky-no-approval]: a high-risk plan needs no approval" in (
        result.stdout
    )
    assert "hint: add 'approvals: {required: [ROLE]}'" in result.stdout
    assert result.stdout.rstrip().endswith("1 phases, 0 steps, 1 warning(s)")


def test_strict_turns_warnings_into_failure(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "warn.yaml", WARNS)
    result = runner.invoke(cli, ["check", "--strict", path])
    assert result.exit_code == 2
    assert "warning[risky-no-approval]" in result.stderr
    assert f"{path}: 0 error(s), 1 warning(s)" in result.stderr


def test_strict_on_a_clean_plan_passes(runner: CliRunner) -> None:
    assert runner.invoke(cli, ["check", "--strict", str(QUICKSTART)]).exit_code == 0


def test_json_output_for_one_file(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", BAD)
    result = runner.invoke(cli, ["check", "--output", "json", path])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert set(report) == {"ok", "errors", "warnings", "problems", "file"}
    assert (report["ok"], report["errors"], report["warnings"], report["file"]) == (
        False,
        2,
        0,
        path,
    )
    first = report["problems"][0]
    assert first == {
        "severity": "error",
        "code": "unknown-key",
        "message": "unknown key 'durration'",
        "path": ["window", "durration"],
        "hint": "did you mean 'duration'?",
        "file": path,
        "line": 3,
        "column": 3,
        "key": None,
        "dotted_path": "window.durration",
    }


def test_json_output_for_a_good_plan(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check", "--output", "json", str(QUICKSTART)])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report == {
        "ok": True,
        "errors": 0,
        "warnings": 0,
        "problems": [],
        "file": str(QUICKSTART),
    }


def test_json_strict_marks_warnings_not_ok(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "warn.yaml", WARNS)
    plain = json.loads(runner.invoke(cli, ["check", "--output", "json", path]).stdout)
    assert (plain["ok"], plain["warnings"]) == (True, 1)
    strict = runner.invoke(cli, ["check", "--output", "json", "--strict", path])
    assert strict.exit_code == 2
    assert json.loads(strict.stdout)["ok"] is False


def test_several_files_at_once(runner: CliRunner, tmp_path: Path) -> None:
    good = str(tmp_path / "good.yaml")
    shutil.copy(QUICKSTART, good)
    bad = write(tmp_path, "bad.yaml", BAD)
    result = runner.invoke(cli, ["check", good, bad])
    assert result.exit_code == 2
    assert f"{good}: ok" in result.stdout
    assert f"{bad}: 2 error(s)" in result.stderr

    both_good = runner.invoke(cli, ["check", good, good])
    assert both_good.exit_code == 0
    assert both_good.stdout.count(": ok —") == 2


def test_several_files_as_json_is_a_list(runner: CliRunner, tmp_path: Path) -> None:
    good = str(QUICKSTART)
    bad = write(tmp_path, "bad.yaml", BAD)
    result = runner.invoke(cli, ["check", "--output", "json", good, bad])
    assert result.exit_code == 2
    reports = json.loads(result.stdout)
    assert [(r["file"], r["ok"], r["errors"]) for r in reports] == [
        (good, True, 0),
        (bad, False, 2),
    ]


def test_a_missing_file_is_an_error_not_a_crash(runner: CliRunner, tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    result = runner.invoke(cli, ["check", path])
    assert result.exit_code == 2
    assert f"{path}: error[io]: cannot read plan" in result.stderr
    assert "Traceback" not in result.output


def test_yaml_syntax_errors(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, "tab.yaml", "name: demo\nphases:\n\t- name: one\n")
    result = runner.invoke(cli, ["check", path])
    assert result.exit_code == 2
    assert f"{path}:3:1: error[yaml]: invalid YAML" in result.stderr
    assert "hint: YAML does not allow tabs for indentation; use spaces" in result.stderr


def test_check_needs_a_file(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["check"])
    assert result.exit_code == 2
    assert "Missing argument" in result.output


def test_schema_is_json_with_the_plan_properties(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "tminus plan"
    props = schema["properties"]
    assert "phases" in props
    assert {"name", "phases"} <= set(schema["required"])
    assert schema["additionalProperties"] is False
    # Aliases are what a plan writes: `for` in a watch period, `from` in a restore step.
    defs = schema["$defs"]
    assert "for" in defs["WatchPeriod"]["properties"]
    assert "from" in defs["RestoreStep"]["properties"]
