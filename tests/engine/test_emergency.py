"""Emergency actions in milliseconds (issue #17, item 4): the wake of a runner after an abort
request, its guard against signalling the wrong process, the CLI's light abort, and a
``tminus rollback`` handed to a running ``tminus serve``.

Real processes throughout: runners are ``tminus run`` subprocesses, the server is a real
``tminus serve``, the signal is a real SIGUSR1. Durations are measured from the store's
recorded events, not around a CLI (whose start-up on a loaded machine is no part of it).

Mutations tried (each makes a test here fail):
- ``wake.SEND = False`` (no signal sent): ``test_a_woken_runner_stops_far_within_its_poll``
  (each stop then waits for the next poll, 0 to 500 ms; three below 125 ms by chance: ~1.6 %);
- the token comparison removed from ``wake_pid``: ``test_a_reused_pid_is_never_signalled``;
- the ``catches`` test removed from ``wake_pid``: the same test (``sleep`` dies of SIGUSR1);
- ``Server._take_requests`` not called in ``tick_once``: ``test_cli_rollback_runs_in_the_
  running_server`` (the CLI withdraws its request after 3 s and rolls back itself);
- ``from tminus.engine import runner`` at the top of ``cli/deploy.py``'s ``abort``: the abort's
  module check in ``test_a_woken_runner_stops_far_within_its_poll``.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import Tm
from tests.serve.conftest import Serve
from tminus.engine import attempt, emergency
from tminus.engine.wake import wake_pid, wake_runner
from tminus.procfs import pid_token
from tminus.store.store import Store

WAIT_PLAN = """
name: {name}
environment: test
phases:
  - name: one
    steps:
      - kind: run
        command: "echo did >> {name}.ledger"
        undo: [{{kind: run, command: "echo undone >> {name}.ledger"}}]
      - {{kind: wait, duration: 60s}}
      - {{kind: run, command: "touch {name}.never"}}
"""

#: Runs ``tminus ARGS`` (``tminus.cli.app:cli``) and writes the modules it loaded.
_RUN = """
import json, sys
from tminus.cli.app import cli
try:
    cli(json.loads(sys.argv[1]), prog_name="tminus", standalone_mode=False)
except SystemExit as exc:
    if exc.code:
        raise
with open(sys.argv[2], "w") as f:
    json.dump(sorted(sys.modules), f)
"""

#: Never needed to ask a live runner to abort (the plan, the engine proper, the step kinds).
NOT_FOR_ABORT = ("pydantic", "tminus.plan.model", "tminus.engine.engine", "tminus.steps")


def _store(cwd: Path) -> Store:
    return Store(f"sqlite:///{cwd / '.tminus' / 'state.db'}")


def _ts(events: list[dict[str, Any]], etype: str) -> datetime:
    return next(e["ts"] for e in events if e["type"] == etype)


def _spawn(tm: Tm, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tminus.testing.seam", *args],
        cwd=tm.cwd,
        env=tm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until(what: str, cond: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _waiting(store: Store, deploy: str) -> bool:
    """Is the deploy's runner in its `wait` step (phase/0/step/1) now?"""
    try:
        row = store.step_rows(deploy).get("phase/0/step/1")
    except Exception:  # the deploy row is not there yet
        return False
    return row is not None and row["state"] == "running"


def test_a_woken_runner_stops_far_within_its_poll(tm: Tm) -> None:
    """Three runners, each in a 60 s `wait`; each is asked to abort with rollback (two by the
    API's function in this process, one by `tminus abort --rollback`): each stops its step
    within a quarter of the poll interval of the request, as recorded, then rolls back. The
    CLI asked without loading the plan model, the engine proper or a step kind."""
    names = ["wa", "wb", "wc"]
    for n in names:
        (tm.cwd / f"{n}.yaml").write_text(WAIT_PLAN.format(name=n))
    runners = [_spawn(tm, "run", f"{n}.yaml") for n in names]
    try:
        _until("the state store", lambda: (tm.cwd / ".tminus" / "state.db").exists())
        store = _store(tm.cwd)
        for n in names:
            deploy = f"{n}-1"
            _until(f"{deploy} to wait", functools.partial(_waiting, store, deploy))
        time.sleep(0.3)  # well into the wait: the supervisor is between two polls
        for n in names[:2]:
            said = emergency.request_abort_of_live(store, f"{n}-1", True, "carol", None)
            assert said is not None and "now (woken)" in said, said
        out = tm.cwd / "modules.json"
        proc = subprocess.run(
            [sys.executable, "-c", _RUN, json.dumps(["abort", "wc-1", "--rollback"]), str(out)],
            cwd=tm.cwd,
            env={**tm.env, "TMINUS_OPERATOR": "carol"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "now (woken)" in proc.stdout, proc.stdout
        for r in runners:
            assert r.wait(timeout=30) == 1
    finally:
        for r in runners:
            if r.poll() is None:
                r.kill()
    # `import tminus` registers an empty stand-in for pydantic's plug-in loader (a module
    # object made in memory: nothing of pydantic is imported)
    modules = [m for m in json.loads(out.read_text()) if m != "pydantic.plugin._loader"]
    assert "tminus.engine.emergency" in modules  # the measure is real: abort ran there
    loaded = [m for m in modules if any(m == x or m.startswith(x + ".") for x in NOT_FOR_ABORT)]
    assert not loaded, loaded
    for n in names:
        d = store.deploy(f"{n}-1")
        assert d["state"] == "aborted" and "carol" in d["reason"], d["reason"]
        events = store.events(f"{n}-1")
        took = (_ts(events, "step.stopped") - _ts(events, "deploy.abort_requested")).total_seconds()
        assert took < attempt.ABORT_POLL_S / 4, f"{n}: stopped {took * 1000:.0f} ms after"
        assert (tm.cwd / f"{n}.ledger").read_text() == "did\nundone\n"
        assert not (tm.cwd / f"{n}.never").exists()
    store.close()


_CATCHER = """
import pathlib, signal, sys, time
woke = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda *a: woke.write_text("woken"))
pathlib.Path(sys.argv[2]).touch()
time.sleep(60)
"""


def test_a_reused_pid_is_never_signalled(tmp_path: Path) -> None:
    """The wake goes only to the process the row names: a start token that differs (the pid
    now belongs to another process) or another host sends nothing; a process that does not
    catch SIGUSR1 (its default action would kill it) is never sent it."""
    woke, ready = tmp_path / "woke", tmp_path / "ready"
    catcher = subprocess.Popen([sys.executable, "-c", _CATCHER, str(woke), str(ready)])
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        _until("the catcher", ready.exists, timeout=30)
        token = pid_token(catcher.pid)
        assert token is not None
        here = socket.gethostname()
        row = {"runner_pid": catcher.pid, "runner_token": token, "host": here}
        assert not wake_runner(row | {"runner_token": str(int(token) + 1)})
        assert not wake_runner(row | {"host": here + "-elsewhere"})
        time.sleep(0.3)
        assert not woke.exists(), "a wrong token or host still signalled the process"
        assert wake_runner(row)
        _until("the wake", woke.exists, timeout=10)
        assert not wake_pid(sleeper.pid, pid_token(sleeper.pid), here)
        time.sleep(0.3)
        assert sleeper.poll() is None, "a process that does not catch SIGUSR1 was sent it"
    finally:
        for p in (catcher, sleeper):
            p.kill()
            p.wait()


ROLLBACK_PLAN = """
name: hand
environment: test
phases:
  - name: one
    steps:
      - kind: run
        command: "echo did >> ledger"
        undo: [{kind: run, command: "echo undone >> ledger"}]
"""


def test_cli_rollback_runs_in_the_running_server(tmp_path: Path) -> None:
    """`tminus rollback` of a succeeded deploy while a `tminus serve` of the store runs here, in
    this directory: the server's worker runs it (its claim on the request is recorded, done
    with exit 0), the CLI follows it to its end and exits 0, and the undo ran once."""
    s = Serve(tmp_path)
    try:
        (tmp_path / "p.yaml").write_text(ROLLBACK_PLAN)
        s.tm("run", "p.yaml", check=0)
        proc, _port = s.start()
        out = s.tm("rollback", "hand-1", timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"tminus serve (pid {proc.pid} on" in out.stderr, out.stderr
        assert "hand-1: rolled_back" in out.stdout + out.stderr
        assert s.status("hand-1")["state"] == "rolled_back"
        assert (tmp_path / "ledger").read_text() == "did\nundone\n"
        store = _store(tmp_path)

        def handed() -> list[dict[str, Any]]:
            drive = store.timers("hand-1", kinds=("drive",))
            return [r for r in drive if r["key"].startswith("cli:")]

        # The CLI ends with the run's final line; the server notes the worker's exit just after.
        _until("the server to note the run's end", lambda: handed()[0]["state"] != "pending")
        rows = handed()
        store.close()
        assert len(rows) == 1 and rows[0]["state"] == "done", rows
        assert str(rows[0]["lease_owner"]).split(":")[1] == str(proc.pid)
        assert str(rows[0]["outcome"]).startswith("exit 0")
    finally:
        s.stop_all()


def test_only_abort_and_rollback_of_the_deploy_are_handed_over() -> None:
    """A server runs only what the CLI may hand it: never ``--state``/``--as`` (the server
    adds those), another command, another deploy, or a flag without its value."""
    ok = emergency.valid_request
    assert ok("d-1", ["rollback", "d-1", "--phase", "two", "--reason", "x", "--force"])
    assert ok("d-1", ["abort", "d-1", "--rollback"])
    assert not ok("d-1", ["rollback", "d-2"])
    assert not ok("d-1", ["resume", "d-1"])
    assert not ok("d-1", ["abort", "d-1", "--state", "sqlite:////tmp/x.db"])
    assert not ok("d-1", ["rollback", "d-1", "--phase"])
    assert not ok("d-1", "rollback d-1")
    assert emergency.ABORT_POLL_S == attempt.ABORT_POLL_S  # the CLI's text says the truth


def test_the_wake_is_ignored_once_the_run_is_over(tmp_path: Path) -> None:
    """After its run a runner ignores SIGUSR1 (a wake sent as the run ends cannot kill it
    before it reports), and no longer says it catches it (so none is sent)."""
    (tmp_path / "p.yaml").write_text(
        "name: late\nenvironment: test\nphases:\n  - name: one\n    steps:\n"
        '      - {kind: run, command: "true"}\n'
    )
    script = (
        "import os, signal, sys\n"
        "from tminus.cli.app import cli\n"
        "from tminus.engine.wake import catches\n"
        "try:\n"
        "    cli(['run', 'p.yaml'], prog_name='tminus', standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert not catches(os.getpid())\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "print('alive')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TMINUS_STATE"}
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0 and "alive" in proc.stdout, proc.stderr
    assert proc.returncode != -signal.SIGUSR1
