"""Operations and health checks end to end, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Tm

PLAN = """
name: shop
environment: test
roles:
  oncall: {people: [alice, bob]}
  dba: {people: [dora]}
secrets:
  token: ${env:SHOP_TOKEN}
variables:
  data: data
checks:
  disk_ok: {source: command, command: "echo 42", expect: "< 90", warn: "> 40"}
phases:
  - name: deploy
    steps: [{kind: run, name: noop, command: "true"}]
operations:
  restart_import:
    description: Restart a failed import.
    params:
      artist: {required: true, description: "artist key"}
      batch: {type: int, default: 10}
      verbose: {type: bool, default: false}
    roles: [oncall]
    steps:
      - kind: run
        name: restart
        command: mkdir -p ${data} && echo "${artist} ${batch} ${verbose} ${token}" >>${data}/ops.log
    checks:
      - {source: file_count, path: "${data}", pattern: ops.log, expect: "== 1"}
  purge_cache:
    description: Delete the cache (cannot be undone).
    dangerous: true
    steps: [{kind: run, name: purge, command: "rm -rf cache && echo purged >> purge.log"}]
  broken:
    steps:
      - kind: run
        name: make a mess
        command: "echo mess >> mess.log"
        undo: [{kind: run, name: clean up, command: "echo cleaned >> mess.log"}]
      - {kind: run, name: fail, command: "false"}
health:
  - use: disk_ok
  - {name: app responds, source: command, command: "test -f up"}
  - {name: errors, source: command, command: "cat errors 2>/dev/null || echo 0",
     warn: "> 0", critical: "> 5"}
"""


def plan(tm: Tm) -> str:
    tm.env["SHOP_TOKEN"] = "s3cr3t-op-token"
    (tm.cwd / "p.yaml").write_text(PLAN)
    return "p.yaml"


def test_op_list(tm: Tm) -> None:
    rows = tm.json("op", "list", plan(tm))
    by = {r["name"]: r for r in rows}
    assert set(by) == {"restart_import", "purge_cache", "broken"}
    assert by["restart_import"]["params"]["batch"] == {
        "type": "int",
        "default": 10,
        "required": False,
        "description": None,
    }
    assert by["purge_cache"]["dangerous"] and by["purge_cache"]["confirm"]


def test_op_run_with_params_is_durable_logged_and_masked(tm: Tm) -> None:
    p = plan(tm)
    proc = tm("op", "run", p, "restart_import", "--param", "artist=phish", "--param", "batch=5")
    assert proc.returncode == 0, proc.stderr
    assert (tm.cwd / "data" / "ops.log").read_text() == "phish 5 False s3cr3t-op-token\n"
    assert "s3cr3t-op-token" not in proc.stdout + proc.stderr
    deploy = tm.latest()
    assert deploy["id"] == "shop.op.restart_import-1" and deploy["state"] == "succeeded"
    log = tm("log", deploy["id"], "--output", "json", check=0).stdout
    assert "s3cr3t-op-token" not in log and "verify" in log
    assert b"s3cr3t-op-token" not in (tm.cwd / ".tminus" / "state.db").read_bytes()


def test_op_run_rejects_bad_params_and_roles(tm: Tm) -> None:
    p = plan(tm)
    missing = tm("op", "run", p, "restart_import")
    assert missing.returncode == 2 and "needs parameter 'artist'" in missing.stderr
    typo = tm("op", "run", p, "restart_import", "--param", "artst=x")
    assert typo.returncode == 2 and "did you mean 'artist'" in typo.stderr
    bad_type = tm("op", "run", p, "restart_import", "--param", "artist=x", "--param", "batch=ten")
    assert bad_type.returncode == 2 and "type int" in bad_type.stderr
    outsider = tm("op", "run", p, "restart_import", "--param", "artist=x", "--as", "dora")
    assert outsider.returncode == 2 and "oncall" in outsider.stderr
    unknown = tm("op", "run", p, "restart_imprt")
    assert unknown.returncode == 2 and "did you mean 'restart_import'" in unknown.stderr
    assert not (tm.cwd / "data").exists()


def test_dangerous_op_needs_confirmation_when_not_interactive(tm: Tm) -> None:
    p = plan(tm)
    (tm.cwd / "cache").mkdir()
    refused = tm("op", "run", p, "purge_cache")
    assert refused.returncode == 2 and "needs confirmation" in refused.stderr
    assert (tm.cwd / "cache").exists() and not (tm.cwd / "purge.log").exists()
    ok = tm("op", "run", p, "purge_cache", "--yes")
    assert ok.returncode == 0 and not (tm.cwd / "cache").exists()
    d = tm.latest()
    assert "confirmed by alice" in json.dumps(tm.json("log", d["id"]))


def test_op_dry_run_runs_nothing(tm: Tm) -> None:
    proc = tm("op", "run", plan(tm), "restart_import", "--param", "artist=phish", "--dry-run")
    assert proc.returncode == 0 and "phish" in proc.stdout
    assert not (tm.cwd / "data").exists() and not (tm.cwd / ".tminus").exists()


def test_failing_op_rolls_back_its_steps(tm: Tm) -> None:
    proc = tm("op", "run", plan(tm), "broken")
    assert proc.returncode == 1
    assert (tm.cwd / "mess.log").read_text().split() == ["mess", "cleaned"]
    assert tm.latest()["state"] == "rolled_back"


def test_operations_lock_per_operation(tm: Tm) -> None:
    p = plan(tm)
    # an operation does not take the deployment's lock, nor another operation's
    assert tm("op", "run", p, "broken").returncode == 1
    assert tm("run", p).returncode == 0
    assert tm("op", "run", p, "restart_import", "--param", "artist=a").returncode == 0


def test_health_exit_codes_and_json(tm: Tm) -> None:
    p = plan(tm)
    (tm.cwd / "up").touch()
    ok = tm("health", p)
    assert ok.returncode == 0, ok.stdout
    lines = ok.stdout.splitlines()
    assert lines[0].startswith("WARN") and "disk_ok" in lines[0]  # 42 > 40 warns
    assert lines[1].startswith("PASS") and lines[2].startswith("PASS")
    (tm.cwd / "errors").write_text("3\n")
    warn = tm("health", p, "--output", "json")
    assert warn.returncode == 0
    data = json.loads(warn.stdout)
    assert [c["status"] for c in data["checks"]] == ["WARN", "PASS", "WARN"]
    assert data["checks"][2]["value"] == 3
    (tm.cwd / "errors").write_text("9\n")
    (tm.cwd / "up").unlink()
    crit = tm("health", p, "--output", "json")
    assert crit.returncode == 1
    assert [c["status"] for c in json.loads(crit.stdout)["checks"]] == [
        "WARN",
        "CRITICAL",
        "CRITICAL",
    ]


def test_health_without_checks_is_bad_input(tm: Tm) -> None:
    (tm.cwd / "q.yaml").write_text("name: q\nphases: [{name: a}]\n")
    proc = tm("health", "q.yaml")
    assert proc.returncode == 2 and "no health checks" in proc.stderr


def test_seed_operations_are_listed(tm: Tm) -> None:
    root = Path(__file__).resolve().parents[1]
    rows = tm.json("op", "list", str(root / "examples" / "seeds" / "archive-import.yaml"))
    emergency = [r["name"] for r in rows if r["emergency"]]
    assert len(emergency) == 3 and all(r["confirm"] for r in rows if r["name"] == "emergency_stop")


def _run_in_pty(tm: Tm, args: list[str], answer: bytes) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal, answer its prompt, return (exit code, screen)."""
    import os
    import pty
    import sys
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: become tminus on the terminal
        os.chdir(tm.cwd)
        os.execve(sys.executable, [sys.executable, "-m", "tminus", *args], tm.env)
    screen = b""
    answered = False
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
        if not answered and b"[y/N]" in screen:
            os.write(fd, answer + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), screen.decode(errors="replace")


def test_dangerous_op_asks_on_a_terminal(tm: Tm) -> None:
    p = plan(tm)
    (tm.cwd / "cache").mkdir()
    code, screen = _run_in_pty(tm, ["op", "run", p, "purge_cache"], b"n")
    assert "Run dangerous operation 'purge_cache'" in screen
    assert code == 2 and "not confirmed" in screen and (tm.cwd / "cache").exists()
    code, screen = _run_in_pty(tm, ["op", "run", p, "purge_cache"], b"y")
    assert code == 0, screen
    assert not (tm.cwd / "cache").exists()
