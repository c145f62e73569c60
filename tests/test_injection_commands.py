"""Issue #13 (items 1 and 3): commands are safe by construction, and `--var`/`--param` values
are literal.

Real processes throughout: the `tminus` CLI in a subprocess, deploys run by the engine
in-process (for the property tests: no interpreter start per example), `ssh` steps against a
real OpenSSH sshd logging in as the unprivileged test user (src/tminus/testing/sshd.py).
Nothing is mocked.

Mutations tried (each made the named tests fail, then was restored):
- ``shellquote.escape()`` returning ``shlex.quote(value)`` for every context (the behaviour
  the issue reported): test_the_reported_injections_run_steps,
  test_the_reported_injections_ssh_steps and both property tests fail (the single-quoted
  file holds ``x'"'"'…`` instead of the value, the double-quoted one runs ``touch``).
- ``Resolver.for_plan`` resolving ``overrides`` again (``r.resolve(raw)``):
  test_var_values_are_literal fails (the env value and the file's content are printed).
- ``derived_plan`` not writing ``$${`` for given parameters: test_param_values_are_literal
  fails.
- the ``shell_problems`` hook removed from validate_plan:
  test_check_refuses_references_it_cannot_quote fails (exit 0, the backquoted command runs).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Tm
from tminus.engine import operations, runner
from tminus.plan.loader import load_plan, load_plan_text
from tminus.store.store import Store
from tminus.testing.sshd import SshdFleet, SshdUnavailable

#: Where a successful injection would leave its mark (absolute: commands run in any cwd).
SENTINEL_DIR = Path(tempfile.mkdtemp(prefix="tminus-inj-", dir="/tmp"))
SENTINEL_DIR.chmod(0o777)
PWNED = SENTINEL_DIR / "PWNED"

#: The three spellings of the issue, each with the value that broke it.
FINDINGS = {
    "a": ("printf %s '${a}' > {d}/a", "x; touch " + str(PWNED)),
    "b": ('printf %s "${b}" > {d}/b', f'x"; touch {PWNED}; echo "'),
    "c": ('printf %s "${c}" > {d}/c', f"$(touch {PWNED})"),
}


def contexts(var: str, d: Path, field: str) -> str:
    """Command text writing ``${var}`` to files, once per context a reference can stand in."""
    r = "${" + var + "}"
    return "\n".join(
        [
            f"printf %s {r} > {d}/{field}.unquoted",
            f"printf %s '{r}' > {d}/{field}.single",
            f'printf %s "{r}" > {d}/{field}.double',
            f"printf %s a{r}b > {d}/{field}.mid",
            f": $(printf %s {r} > {d}/{field}.subst)",
            f': "$(printf %s "{r}" > {d}/{field}.subst_dq)"',
        ]
    )


def assert_received(d: Path, field: str, value: str) -> None:
    for ctx in ("unquoted", "single", "double", "mid", "subst", "subst_dq"):
        got = (d / f"{field}.{ctx}").read_bytes().decode()
        assert got == (f"a{value}b" if ctx == "mid" else value), (field, ctx, value)
    assert not PWNED.exists(), (field, value)


def private_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="tminus-inj-", dir="/tmp"))
    d.chmod(0o777)  # the ssh login user writes here too
    return d


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshdFleet]:
    try:
        f = SshdFleet(1).start()
    except SshdUnavailable as exc:  # fail, never skip: these tests need real SSH
        pytest.fail(f"cannot start sshd: {exc}")
    try:
        yield f
    finally:
        f.stop()
        shutil.rmtree(SENTINEL_DIR, ignore_errors=True)


def ssh_targets(fleet: SshdFleet) -> dict[str, Any]:
    i = fleet.instances[0]
    return {
        "hosts": {
            "h1": {
                "address": "127.0.0.1",
                "port": i.port,
                "user": fleet.user,
                "identity_file": str(fleet.identity_file),
                "known_hosts": str(fleet.known_hosts),
            }
        },
        "groups": {"web": ["h1"]},
    }


def write(d: Path, plan: dict[str, Any]) -> Path:
    path = d / "plan.yaml"
    path.write_text(json.dumps(plan))
    return path


def deploy(path: Path, state: Path, **overrides: str) -> tuple[str, int, str]:
    """A deploy run in-process, in a scratch working directory (were a command ever to
    misread a value, what it wrote would land there, not in the checkout)."""
    loaded = load_plan(path)
    assert loaded.ok and loaded.plan is not None, loaded.problems
    opts = runner.RunOptions(
        state_url=f"sqlite:///{state}/state.db", operator="t", overrides=overrides, quiet=True
    )
    with contextlib.chdir(state):
        return runner.start_loaded(loaded.plan, path.read_text(), str(path), opts)


# --- the reported findings, through the CLI --------------------------------------------


def finding_steps(d: Path, kind: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"kind": kind, "id": f"s{k}", "command": cmd.replace("{d}", str(d)), **extra}
        for k, (cmd, _) in FINDINGS.items()
    ]


def run_findings(tmp_path: Path, d: Path, plan: dict[str, Any]) -> None:
    plan["variables"] = dict.fromkeys(FINDINGS, "")
    path = write(tmp_path, plan)
    tm = Tm(tmp_path)
    check = tm("check", str(path), check=0)
    assert "unsafe" not in check.stdout + check.stderr  # the spellings are fine as written
    args = [a for k, (_, v) in FINDINGS.items() for a in ("--var", f"{k}={v}")]
    dry = tm("run", str(path), "--dry-run", *args, check=0)
    # the dry run shows the command as it will run: each value quoted for its place
    assert "printf %s 'x; touch " + str(PWNED) + "' > " in dry.stdout
    assert 'printf %s "x\\"; touch ' + str(PWNED) + '; echo \\"" > ' in dry.stdout
    assert 'printf %s "\\$(touch ' + str(PWNED) + ')" > ' in dry.stdout
    tm("run", str(path), *args, check=0)
    for k, (_, value) in FINDINGS.items():
        assert (d / k).read_text() == value
    assert not PWNED.exists()


def test_the_reported_injections_run_steps(tmp_path: Path) -> None:
    d = private_dir()
    try:
        plan = {"name": "inj-run", "environment": "t"}
        plan["phases"] = [{"name": "p", "steps": finding_steps(d, "run")}]
        run_findings(tmp_path, d, plan)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_the_reported_injections_ssh_steps(tmp_path: Path, sshd: SshdFleet) -> None:
    d = private_dir()
    try:
        plan = {"name": "inj-ssh", "environment": "t", "targets": ssh_targets(sshd)}
        plan["phases"] = [{"name": "p", "steps": finding_steps(d, "ssh", on="web")}]
        run_findings(tmp_path, d, plan)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- every command-bearing field, hostile values ---------------------------------------

HOSTILE = [
    "'",
    '"',
    "\\",
    f"$(touch {PWNED})",
    f"`touch {PWNED}`",
    f"; touch {PWNED}",
    f"\ntouch {PWNED}\n",
    f"' ; touch {PWNED} ; '",
    f'" ; touch {PWNED} ; echo "',
    "'\\''",
    "${x}",
    "${env:HOME}",
    "$${",
    "$HOME",
    "#",
    "*",
    "&|<>()",
    "\t ",
    "é",
]
VALUES = st.lists(
    st.sampled_from(HOSTILE)
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=3),
    min_size=1,
    max_size=6,
).map("".join)


def local_plan(d: Path) -> dict[str, Any]:
    return {
        "name": "inj-local",
        "environment": "t",
        "variables": {"v": ""},
        "maintenance": {
            "enable": contexts("v", d, "maint_on"),
            "disable": contexts("v", d, "maint_off"),
        },
        "checks": {"c": {"source": "command", "command": contexts("v", d, "check")}},
        "phases": [
            {
                "name": "p",
                "steps": [
                    {"kind": "maintenance", "action": "on"},
                    {"kind": "run", "command": contexts("v", d, "run")},
                    {"kind": "run", "command": ["sh", "-c", contexts("v", d, "argv_sh")]},
                    {"kind": "maintenance", "action": "off"},
                ],
                "verify": ["c"],
            }
        ],
        "operations": {
            "op": {
                "params": {"p": {"required": True}},
                "steps": [{"kind": "run", "command": contexts("p", d, "op")}],
            }
        },
    }


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(value=VALUES)
def test_hostile_values_are_data_in_every_local_command_field(tmp_path: Path, value: str) -> None:
    """run (string and `sh -c` argv), maintenance enable/disable, a `source: command`
    check, and an operation's step given the value with --param."""
    d = private_dir()
    state = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        path = write(d, local_plan(d))
        _, code, message = deploy(path, state, v=value)
        assert code == 0, message
        for field in ("maint_on", "run", "argv_sh", "maint_off", "check"):
            assert_received(d, field, value)
        # the operation: its parameter typed by an operator (literal, like --var)
        p = load_plan(path).plan
        assert p is not None
        given_params = {"p": value}
        o = operations.get_operation(p, "op")
        vals = operations.parse_params("op", o, given_params)
        text = operations.derived_plan(p, "op", vals, given=given_params)
        loaded = load_plan_text(text, str(path))
        assert loaded.plan is not None, loaded.problems
        opts = runner.RunOptions(state_url=f"sqlite:///{state}/state.db", operator="t", quiet=True)
        with contextlib.chdir(state):
            _, code, message = runner.start_loaded(loaded.plan, text, str(path), opts)
        assert code == 0, message
        assert_received(d, "op", value)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(value=VALUES)
def test_hostile_values_are_data_in_ssh_steps_and_fleet_hooks(
    tmp_path: Path, sshd: SshdFleet, value: str
) -> None:
    """An `ssh` step's command over real sshd, and its before_batch (run) and after_batch
    (ssh on ${host}) hooks."""
    d = private_dir()
    state = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        step = {
            "kind": "ssh",
            "on": "web",
            "command": contexts("v", d, "ssh"),
            "before_batch": [{"kind": "run", "command": contexts("v", d, "hook_run")}],
            "after_batch": [
                {"kind": "ssh", "on": "${host}", "command": contexts("v", d, "hook_ssh")}
            ],
        }
        plan = {
            "name": "inj-ssh-prop",
            "environment": "t",
            "targets": ssh_targets(sshd),
            "variables": {"v": ""},
            "phases": [{"name": "p", "steps": [step]}],
        }
        _, code, message = deploy(write(d, plan), state, v=value)
        assert code == 0, message
        for field in ("ssh", "hook_run", "hook_ssh"):
            assert_received(d, field, value)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_nul_byte_is_refused_before_the_command_runs(tmp_path: Path) -> None:
    d = private_dir()
    try:
        plan = {
            "name": "inj-nul",
            "environment": "t",
            "variables": {"v": ""},
            "phases": [
                {"name": "p", "steps": [{"kind": "run", "command": f"touch {d}/ran ${{v}}"}]}
            ],
        }
        _, code, _ = deploy(write(d, plan), tmp_path, v="a\0b")
        assert code != 0
        assert not (d / "ran").exists()
        rows = Store(f"sqlite:///{tmp_path}/state.db").step_rows("inj-nul-1")
        assert any("NUL byte" in (r.get("error") or "") for r in rows.values()), rows
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- tminus check ---------------------------------------------------------------------

UNSAFE_PLAN = """\
name: unsafe
environment: t
variables: {v: x}
targets:
  hosts: {h1: {address: 127.0.0.1}}
  groups: {web: [h1]}
maintenance:
  enable: "echo on  # by ${v}"
  disable: echo off
checks:
  c: {source: command, command: "echo $((${v} + 1))"}
phases:
  - name: p
    steps:
      - kind: run
        command: echo `cat ${v}`
      - kind: ssh
        on: web
        command: echo "\\${v}"
        before_batch:
          - {kind: run, command: "echo $'${v}'"}
operations:
  op:
    steps:
      - {kind: run, command: "echo ${v}; cat <<${v}"}
"""


def test_check_refuses_references_it_cannot_quote(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.yaml"
    path.write_text(UNSAFE_PLAN)
    tm = Tm(tmp_path)
    out = tm("check", str(path), check=2)
    text = out.stdout + out.stderr
    assert "Traceback" not in text
    expect = [  # (line:column of the field, a piece of the hint)
        ("8:11", "$${…} to keep the text literal"),  # comment
        ("11:33", "expr ${v} + 1"),  # arithmetic
        ("16:18", "$(cat ${v})"),  # backquotes
        ("19:18", "drop the backslash"),  # \${v}
        ("21:34", "'${v}'"),  # $'…'
        ("25:30", "<<'EOF'"),  # here-document delimiter
    ]
    for where, hint in expect:
        assert f"unsafe.yaml:{where}: error[unsafe-reference]" in text, (where, text)
        assert hint in text, (hint, text)
    assert text.count("error[unsafe-reference]") == len(expect)
    # and `tminus run` runs none of it
    run = tm("run", str(path))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert not list(tmp_path.glob(".tminus/*.db")) or "unsafe-1" not in run.stdout


# --- --var and --param are literal --------------------------------------------------------


def test_var_values_are_literal(tmp_path: Path) -> None:
    secret_file = tmp_path / "private.txt"
    secret_file.write_text("FILE-CONTENT-7f3a")
    out_file = tmp_path / "out"
    path = write(
        tmp_path,
        {
            "name": "lit",
            "environment": "t",
            "variables": {"w": "x", "v": "default"},
            "phases": [
                {
                    "name": "p",
                    "steps": [{"kind": "run", "command": f"printf %s ${{v}} > {out_file}"}],
                }
            ],
        },
    )
    given = f"${{env:CI_TOKEN}} ${{file:{secret_file}}} ${{w}}"
    tm = Tm(tmp_path, env={"CI_TOKEN": "ENV-TOKEN-91c2"})
    dry = tm("run", str(path), "--dry-run", "--var", f"v={given}", check=0)
    assert f"printf %s '{given}' > {out_file}" in dry.stdout
    tm("run", str(path), "--var", f"v={given}", check=0)
    assert out_file.read_text() == given
    for seen in (dry.stdout + dry.stderr, out_file.read_text()):
        assert "ENV-TOKEN-91c2" not in seen and "FILE-CONTENT-7f3a" not in seen


def test_param_values_are_literal(tmp_path: Path) -> None:
    secret_file = tmp_path / "private.txt"
    secret_file.write_text("FILE-CONTENT-5d1e")
    out_file = tmp_path / "out"
    path = write(
        tmp_path,
        {
            "name": "litop",
            "environment": "t",
            "phases": [{"name": "p", "steps": [{"kind": "run", "command": "true"}]}],
            "operations": {
                "op": {
                    "params": {"p": {"required": True}},
                    "steps": [{"kind": "run", "command": f"printf %s ${{p}} > {out_file}"}],
                }
            },
        },
    )
    given = f"${{env:CI_TOKEN}} ${{file:{secret_file}}}"
    tm = Tm(tmp_path, env={"CI_TOKEN": "ENV-TOKEN-44ab"})
    dry = tm("op", "run", str(path), "op", "--param", f"p={given}", "--dry-run", check=0)
    assert f"printf %s '{given}' > {out_file}" in dry.stdout
    tm("op", "run", str(path), "op", "--param", f"p={given}", check=0)
    assert out_file.read_text() == given
    assert "ENV-TOKEN-44ab" not in dry.stdout + dry.stderr
    assert "FILE-CONTENT-5d1e" not in dry.stdout + dry.stderr
