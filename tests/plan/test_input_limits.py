"""Hostile plan input is refused quickly, with its position: size, nesting, aliases, merge keys
of non-mappings and YAML tags (issue #13, item 5).

The command-line checks run ``python -m tminus check`` under resource limits (RLIMIT_AS of
1 GiB, RLIMIT_CPU of 20 s): a regression that reads /dev/zero to the end or pays the quadratic
cost of deep flow nesting is killed by the kernel and the test fails; no wall-clock timing is
asserted.

Mutations tried (each made a test here fail, then was restored):

- ``load_plan`` reading the whole file (``p.read_bytes()``): /dev/zero and the FIFO hit the
  memory limit (MemoryError, exit 1) — ``test_endless_input_is_refused_after_the_limit``,
  ``test_a_fifo_is_read_no_further_than_the_limit``;
- the ``len(raw) > MAX_BYTES`` check removed: the 5 MiB + 1 byte file loads —
  ``test_the_size_limit_is_exact``;
- the ``_check_flow_depth`` call removed: 100,000 nested flow lists run out of the CPU limit
  (SIGXCPU) — ``test_deep_flow_nesting_is_refused_under_a_cpu_limit``;
- the depth check of ``_Builder.build`` removed: block nesting is refused only by the
  RecursionError fallback at 1:1 — ``test_nesting_limit_is_exact``;
- the ``_Loader.compose_node`` depth check removed: the careful parser reports RecursionError
  at 1:1 instead of the position — ``test_deep_mappings_are_refused_too[careful]``;
- the alias count (``again``) removed: the bomb is stopped by MAX_NODES only, after building
  500,000 values — ``test_an_alias_bomb_is_refused_before_it_is_built``;
- the merge-key ``raise`` turned back into ``continue``: ``<<: 5`` is dropped and the plan
  passes — ``test_a_merge_key_needs_mappings``;
- the tag check removed: ``!!python/object/apply`` builds a list and ``!!binary`` bytes —
  ``test_tags_outside_the_core_schema_are_errors``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tminus.cli.app import cli
from tminus.plan import loader
from tminus.plan.loader import (
    MAX_ALIAS_VALUES,
    MAX_BYTES,
    MAX_DEPTH,
    load_plan,
    load_plan_text,
    parse_yaml,
)

PLAN = "name: demo\nphases:\n  - name: one\n    steps:\n      - {kind: run, command: 'true'}\n"


def _limits() -> None:
    gib = 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (gib, gib))
    resource.setrlimit(resource.RLIMIT_CPU, (20, 20))


def check_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``tminus check ARGS`` in a child under 1 GiB of address space and 20 s of CPU."""
    return subprocess.run(
        [sys.executable, "-m", "tminus", "check", *args],
        capture_output=True,
        text=True,
        preexec_fn=_limits,
        timeout=120,
        check=False,
    )


@pytest.fixture(params=["fast", "careful"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each parse test runs with libyaml and with the pure-Python parser."""
    if request.param == "careful":
        monkeypatch.setattr(loader, "_FastLoader", None)
    else:
        assert loader._FastLoader is not None, "libyaml should be installed"
    yield request.param


# --- size ------------------------------------------------------------------------------------


def test_endless_input_is_refused_after_the_limit() -> None:
    proc = check_cli("/dev/zero")
    assert proc.returncode == 2, proc.stderr
    assert "/dev/zero:1:1: error[too-large]: the plan is larger than 5 MiB" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_fifo_is_read_no_further_than_the_limit(tmp_path: Path) -> None:
    fifo = tmp_path / "plan.yaml"
    os.mkfifo(fifo)
    written = [0]

    def feed() -> None:  # endless writer: stops when the reader closes the pipe
        chunk = b"# " + b"x" * 65_000 + b"\n"
        try:
            with fifo.open("wb") as fh:
                while written[0] < 50 * MAX_BYTES:
                    fh.write(chunk)
                    written[0] += len(chunk)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    proc = check_cli(str(fifo))
    writer.join(30)
    assert proc.returncode == 2, proc.stderr
    assert "error[too-large]" in proc.stderr
    assert written[0] < 50 * MAX_BYTES  # the reader stopped; the writer saw the pipe close


def test_the_size_limit_is_exact(tmp_path: Path) -> None:
    pad = MAX_BYTES - len(PLAN)
    at_limit = tmp_path / "at.yaml"
    at_limit.write_text(PLAN + "#" * (pad - 1) + "\n")
    assert at_limit.stat().st_size == MAX_BYTES
    result = load_plan(at_limit)
    assert result.ok, result.problems
    over = tmp_path / "over.yaml"
    over.write_text(PLAN + "#" * pad + "\n")
    (p,) = load_plan(over).problems
    assert (p.code, p.line, p.column) == ("too-large", 1, 1)
    assert f"more than {MAX_BYTES} bytes" in p.message
    assert p.hint is not None


def test_a_large_text_is_refused_without_parsing() -> None:
    (p,) = load_plan_text("x: " + "y" * MAX_BYTES, "big.yaml").problems
    assert p.code == "too-large" and p.file == "big.yaml"


def test_json_output_for_a_plan_too_large(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_BYTES + 10))
    proc = check_cli(str(big), "--output", "json")
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert report["ok"] is False and report["problems"][0]["code"] == "too-large"


# --- a directory -----------------------------------------------------------------------------


def test_a_directory_is_an_io_error(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["check", str(tmp_path)])
    assert res.exit_code == 2
    assert f"{tmp_path}: error[io]: cannot read plan: Is a directory" in res.output
    assert "pass a plan file, not a directory" in res.output
    res = runner.invoke(cli, ["check", str(tmp_path), "--output", "json"])
    assert res.exit_code == 2
    report = json.loads(res.stdout)
    assert report["file"] == str(tmp_path) and report["ok"] is False
    assert [p["code"] for p in report["problems"]] == ["io"]


# --- nesting ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("parser")
@pytest.mark.parametrize("style", ["flow", "block"])
def test_nesting_limit_is_exact(style: str) -> None:
    def doc(levels: int) -> str:  # the root mapping is one level, the lists the others
        if style == "flow":
            return "x: " + "[" * levels + "]" * levels + "\n"
        return "x:\n  " + "- " * levels + "1\n"

    data, _, problems = parse_yaml(doc(MAX_DEPTH - 1))
    assert problems == [] and data is not None
    _, _, problems = parse_yaml(doc(MAX_DEPTH), "deep.yaml")
    (p,) = problems
    assert p.code == "yaml" and f"nested too deeply (more than {MAX_DEPTH} levels)" in p.message
    assert p.file == "deep.yaml"
    # the position of the first level too deep: list number MAX_DEPTH (the root is level 1)
    col = (3 + MAX_DEPTH) if style == "flow" else (3 + 2 * (MAX_DEPTH - 1))
    assert (p.line, p.column) == ((1, col) if style == "flow" else (2, col)), p.format()


@pytest.mark.usefixtures("parser")
def test_deep_mappings_are_refused_too() -> None:
    text = "".join(" " * (2 * i) + f"k{i}:\n" for i in range(2000))
    (p,) = parse_yaml(text)[2]
    assert "nested too deeply" in p.message and p.line == MAX_DEPTH + 1


def test_deep_flow_nesting_is_refused_under_a_cpu_limit(tmp_path: Path) -> None:
    plan = tmp_path / "deep.yaml"
    plan.write_text(PLAN + "variables: {x: " + "[" * 100_000 + "]" * 100_000 + "}\n")
    proc = check_cli(str(plan))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    assert f"{plan}:6:" in proc.stderr and "nested too deeply" in proc.stderr


# --- aliases ---------------------------------------------------------------------------------


def laughs(levels: int = 9) -> str:
    rows = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        rows.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "variables:\n" + "".join(f"  {r}\n" for r in rows)


@pytest.mark.usefixtures("parser")
def test_an_alias_bomb_is_refused_before_it_is_built() -> None:
    _, _, problems = parse_yaml(laughs(), "bomb.yaml")
    (p,) = problems
    assert p.code == "yaml"
    assert f"aliases add more than {MAX_ALIAS_VALUES} values" in p.message
    assert p.line in range(2, 11) and p.hint is not None


def test_an_alias_bomb_from_the_command_line(tmp_path: Path) -> None:
    plan = tmp_path / "bomb.yaml"
    plan.write_text(PLAN + laughs())
    proc = check_cli(str(plan))
    assert proc.returncode == 2, proc.stderr
    assert "aliases add more than" in proc.stderr and "Traceback" not in proc.stderr


def test_aliases_within_the_limit_load() -> None:
    # 10 uses of a 1,000-value list: 10,000 values added, under the limit
    text = "a: &a [" + ", ".join(["x"] * 1000) + "]\nb: [" + ", ".join(["*a"] * 10) + "]\n"
    data, _, problems = parse_yaml(text)
    assert problems == [] and len(data["b"]) == 10 and data["b"][9] == data["a"]


# --- merge keys and tags ---------------------------------------------------------------------

BASE = "base: &b {x: 1}\n"


@pytest.mark.usefixtures("parser")
@pytest.mark.parametrize(
    ("text", "line", "column", "what"),
    [
        ("m:\n  <<: 5\n", 2, 7, "not a single value"),
        (BASE + "m: {<<: [*b, 5]}\n", 2, 14, "not a single value"),
        (BASE + "m:\n  <<: [[1]]\n", 3, 8, "not a list"),
        ("m:\n  <<:\n  y: 2\n", 2, 6, "not a single value"),  # an empty (null) value
    ],
)
def test_a_merge_key_needs_mappings(text: str, line: int, column: int, what: str) -> None:
    _, _, problems = parse_yaml(text, "m.yaml")
    (p,) = problems
    assert "merge key ('<<') takes a mapping or a list of mappings" in p.message
    assert what in p.message
    assert (p.line, p.column) == (line, column), p.format()


@pytest.mark.usefixtures("parser")
def test_a_merge_of_mappings_still_works() -> None:
    data, _, problems = parse_yaml(BASE + "m: {<<: [*b, {y: 2}], z: 3}\n")
    assert problems == [] and data["m"] == {"x": 1, "y": 2, "z": 3}


def test_a_merge_of_a_scalar_fails_the_plan() -> None:
    result = load_plan_text(PLAN + "variables:\n  <<: 5\n", "p.yaml")
    assert not result.ok
    assert [(p.code, p.line) for p in result.problems] == [("yaml", 7)]


@pytest.mark.usefixtures("parser")
@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!python/object/apply:os.system [ls]", "!!python/object/apply:os.system"),
        ("!!python/name:os.system ''", "!!python/name:os.system"),
        ("!foo bar", "!foo"),
        ("!foo {a: 1}", "!foo"),
        ("!!binary aGVsbG8=", "!!binary"),
        ("!!timestamp 2026-01-29", "!!timestamp"),
        ("!!set {a: null}", "!!set"),
        ("!!omap [{a: 1}]", "!!omap"),
        ("!<tag:example.com,2026:x> y", "tag:example.com,2026:x"),
    ],
)
def test_tags_outside_the_core_schema_are_errors(value: str, tag: str) -> None:
    _, _, problems = parse_yaml(f"name: demo\nvariables:\n  a: {value}\n", "t.yaml")
    (p,) = problems
    assert p.code == "yaml" and f"the tag '{tag}' is not supported in a plan" in p.message
    assert (p.file, p.line, p.column) == ("t.yaml", 3, 6)


@pytest.mark.usefixtures("parser")
def test_core_tags_are_accepted() -> None:
    text = "a: !!str 5\nb: !!int '7'\nc: !!map {x: !!null ''}\nd: !!seq [!!bool true]\ne: ! x\n"
    data, _, problems = parse_yaml(text)
    assert problems == []
    assert data == {"a": "5", "b": 7, "c": {"x": None}, "d": [True], "e": "x"}
