"""The emergency actions' fast paths, light enough for the CLI's start-up (the store and the
liveness rule; no plan model, no engine proper, no step kind):

- **an abort of a deploy whose runner is alive** (``tminus abort``, the API's abort): the
  request is recorded, then the runner is woken (``SIGUSR1``, :mod:`tminus.engine.wake`) when
  it runs on this host, so it stops its step and starts the rollback within milliseconds; a
  runner on another host notices at its next poll (:data:`ABORT_POLL_S`);
- **a run handed to a live ``tminus serve``** (``tminus rollback``, ``tminus abort`` of a
  deploy no runner drives): when a server of this store runs on this host, in this
  directory, the CLI records the run it wants (a ``drive`` row due now, not claimed, with the
  command's arguments), wakes the server, and follows the run: the server's warm worker has
  the engine imported already, so the run starts at once instead of after the CLI's own
  imports. The CLI prints the worker's output as it comes and exits with its code. A server
  that does not take the run within :data:`TAKE_S` is passed over: the request is withdrawn
  and the CLI runs it itself, as without a server.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tminus.clock import now
from tminus.engine.liveness import runner_liveness
from tminus.engine.wake import catches, wake_runner, wake_server
from tminus.errors import NotResumable, TminusError
from tminus.procfs import pid_token
from tminus.states import TERMINAL, DeployState

if TYPE_CHECKING:
    from tminus.store.store import Store

__all__ = [
    "ABORT_POLL_S",
    "SERVER_ALIVE_S",
    "TAKE_S",
    "abort_requested_text",
    "abortable",
    "hand_off",
    "quick_abort",
    "record_abort",
    "request_abort_of_live",
    "server_here",
    "valid_request",
]

#: A serve process that beat within this many seconds is alive (it beats every second).
SERVER_ALIVE_S = 10.0
#: How long a handed-over run may wait for a server to take it before the CLI runs it itself.
TAKE_S = 3.0
#: How often the CLI looks at a handed-over run (its claim, its log, its end).
FOLLOW_S = 0.02
#: The runner's poll of abort requests (``engine.attempt.ABORT_POLL_S``, kept equal by a test;
#: not imported from there, which would import the engine).
ABORT_POLL_S = 0.5
#: The key prefix of a run the CLI hands to a server.
CLI_KEY = "cli:"


# --- aborts ---------------------------------------------------------------------------------


def abortable(d: dict[str, Any], deploy_id: str) -> None:
    if d["state"] == DeployState.SUCCEEDED:
        raise NotResumable(
            f"deploy {deploy_id}: the abort arrived after the deploy succeeded; "
            "nothing was stopped",
            hint=f"to undo it, run a new deploy (see tminus log {deploy_id})",
        )
    if DeployState(d["state"]) in TERMINAL:
        raise NotResumable(f"deploy {deploy_id} has ended ({d['state']}); nothing to abort")


def record_abort(
    store: Store,
    d: dict[str, Any],
    rollback: bool,
    person: str,
    audit: dict[str, Any] | None,
) -> bool:
    """Record the abort request, then wake the deploy's runner when it runs on this host
    (it is committed first: the runner reads it when woken). True when it was woken."""
    store.set_deploy(
        d["id"],
        abort_requested=person,
        event="deploy.abort_requested",
        message=f"abort requested by {person}" + (" (rollback)" if rollback else ""),
        event_data={"rollback": rollback, "by": person} | (audit or {}),
    )
    return wake_runner(d)


def abort_requested_text(d: dict[str, Any], rollback: bool, woken: bool) -> str:
    where = "" if d["host"] == socket.gethostname() else f" on {d['host']}"
    when = "now (woken)" if woken else f"within {ABORT_POLL_S:g} s (its next poll)"
    return (
        f"abort requested; the runner (pid {d['runner_pid']}{where}) stops its current step "
        + when
        + (" and rolls back" if rollback else "")
    )


def request_abort_of_live(
    store: Store, deploy_id: str, rollback: bool, person: str, audit: dict[str, Any] | None
) -> str | None:
    """When a live runner drives the deploy: record the request, wake the runner, and say
    so; None when no runner is alive (then a run of ``tminus abort`` must stop it)."""
    d = store.deploy(deploy_id)
    abortable(d, deploy_id)
    if not runner_liveness(d).alive:
        return None
    return abort_requested_text(d, rollback, record_abort(store, d, rollback, person, audit))


def quick_abort(
    state_url: str | None, deploy_id: str, rollback: bool, person: str, *, use_server: bool
) -> tuple[int, str] | None:
    """``tminus abort`` without the engine when it can: a live runner is asked (and woken);
    with none, a live ``tminus serve`` here runs the abort. None: run it in this process."""
    from tminus.store.store import Store

    store = Store(state_url)
    try:
        message = request_abort_of_live(store, deploy_id, rollback, person, None)
        if message is not None:
            return 0, message
        if not use_server:
            return None
        argv = ["abort", deploy_id, *(["--rollback"] if rollback else [])]
        return hand_off(store, deploy_id, argv, person)
    finally:
        store.close()


# --- runs handed to a server ----------------------------------------------------------------


def server_here(store: Store) -> dict[str, Any] | None:
    """A live ``tminus serve`` of this store that can take a run from this terminal: on this
    host, still the process its row names, not this process's parent (a server's worker runs
    what it was given), woken by SIGUSR1 (a server that takes runs handed over catches it),
    and running in this directory (a plan's relative paths resolve against it, so a run there
    is the run here)."""
    host = socket.gethostname()
    for s in store.live_servers(timedelta(seconds=SERVER_ALIVE_S)):
        pid = int(s["pid"])
        if s["host"] != host or pid_token(pid) != str(s["id"]).rsplit(":", 1)[-1]:
            continue
        if pid == os.getppid():  # a worker of that server: it runs the command itself
            continue
        if not catches(pid):
            continue
        try:
            if Path(os.readlink(f"/proc/{pid}/cwd")) != Path.cwd():
                continue
        except OSError:
            continue
        return s
    return None


_REQUEST_FLAGS = {
    "abort": {"--rollback": 0},
    "rollback": {"--phase": 1, "--reason": 1, "--force": 0, "--quiet": 0},
}


def valid_request(deploy_id: str, argv: Any) -> bool:
    """Is ``argv`` a run the CLI may hand to a server for ``deploy_id``: ``abort`` or
    ``rollback`` of that deploy, with their own flags only (never ``--state`` nor ``--as``:
    the server adds those)?"""
    if not isinstance(argv, list) or len(argv) < 2 or not all(isinstance(a, str) for a in argv):
        return False
    flags = _REQUEST_FLAGS.get(argv[0])
    if flags is None or argv[1] != deploy_id:
        return False
    i = 2
    while i < len(argv):
        takes = flags.get(argv[i])
        if takes is None or i + takes > len(argv) - 1:  # an unknown flag, or no value
            return False
        i += 1 + takes
    return True


def hand_off(
    store: Store,
    deploy_id: str,
    argv: list[str],
    person: str,
    *,
    echo: Callable[[str], None] | None = None,
) -> tuple[int, str] | None:
    """Hand ``tminus ARGV`` to a live server here and follow it to its end: (exit code, its
    final line), the worker's other lines echoed as they come. None when no server here
    can take it, or none took it within :data:`TAKE_S` (then the caller runs it)."""
    from tminus.store.timers import DRIVE

    server = server_here(store)
    if server is None:
        return None
    store.deploy(deploy_id)  # NotFound before anything is recorded
    from tminus.engine.prepare import state_dir_of

    log = state_dir_of(store.url) / "serve" / "logs" / f"{deploy_id}.log"
    offset = log.stat().st_size if log.exists() else 0
    key = f"{CLI_KEY}{now().isoformat()}:{os.urandom(4).hex()}"
    store.add_timers(
        deploy_id,
        [
            {
                "key": key,
                "kind": DRIVE,
                "due_at": now(),
                "data": {"argv": argv, "person": person, "server": server["id"]},
            }
        ],
    )
    wake_server(server)
    return _follow(store, deploy_id, argv, key, server, log, offset, echo or _echo)


def _echo(line: str) -> None:
    print(line, flush=True)


def _follow(
    store: Store,
    deploy_id: str,
    argv: list[str],
    key: str,
    server: dict[str, Any],
    log: Path,
    offset: int,
    echo: Callable[[str], None],
) -> tuple[int, str] | None:
    from tminus.store.timers import DRIVE

    deadline = time.monotonic() + TAKE_S
    told = False
    held: str | None = None  # the newest line: the final message once the run ends
    buf = b""
    beat_check = time.monotonic() + 1.0
    while True:
        row = next((r for r in store.timers(deploy_id, kinds=(DRIVE,)) if r["key"] == key), None)
        if row is None:  # removed under us: nothing ran
            return None
        claimed = int(row["attempts"] or 0) > 0
        if not claimed and time.monotonic() > deadline and store.withdraw_drive(deploy_id, key):
            print(
                f"tminus serve (pid {server['pid']}) did not take the run within "
                f"{TAKE_S:g} s: running it here",
                file=sys.stderr,
                flush=True,
            )
            return None
        if claimed and not told:
            told = True
            print(
                f"tminus serve (pid {server['pid']} on {server['host']}) runs it "
                f"(follow with: tminus log {deploy_id})",
                file=sys.stderr,
                flush=True,
            )
        buf, lines = _read_lines(log, offset, buf)
        offset += sum(len(x) + 1 for x in lines)
        for line in lines:
            text = line.decode(errors="replace")
            if text.startswith("--- "):  # the server's marker of a run in its log
                continue
            if held is not None:
                echo(held)
            held = text
        if row["state"] != "pending":
            return _ended(row, held)
        if claimed and held is not None and held.startswith(f"deploy {deploy_id}: "):
            ended = _final(store, deploy_id, argv[0], held)
            if ended is not None:
                return ended
        if claimed and time.monotonic() > beat_check:
            beat_check = time.monotonic() + 1.0
            alive = {s["id"] for s in store.live_servers(timedelta(seconds=SERVER_ALIVE_S))}
            if row["lease_owner"] not in alive:  # it stopped (its claims released) or died
                raise TminusError(
                    f"the tminus serve that took the run of {deploy_id} stopped before it ended",
                    hint=f"see tminus status {deploy_id} (a server resumes what it handed over)",
                )
        time.sleep(FOLLOW_S)


def _read_lines(log: Path, offset: int, buf: bytes) -> tuple[bytes, list[bytes]]:
    """Whole lines of ``log`` from ``offset`` (past what ``buf`` holds already)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(offset + len(buf))
            buf += fh.read()
    except OSError:
        return buf, []
    *lines, rest = buf.split(b"\n")
    return rest, lines


def _final(store: Store, deploy_id: str, command: str, line: str) -> tuple[int, str] | None:
    """The run's final line is out and its deploy has ended: its exit code, without waiting
    for the worker process to end (its interpreter's teardown, the server noting the exit).
    The codes are the commands' own: ``tminus abort`` exits 0 once the deploy is stopped,
    ``tminus rollback`` 0 when it rolled back and 1 otherwise (``engine.after_run.rollback``)."""
    state = str(store.deploy(deploy_id)["state"])
    if state not in {s.value for s in TERMINAL} or not line.startswith(
        f"deploy {deploy_id}: {state}"
    ):
        return None
    if command == "abort":
        return 0, line
    return (0 if state == DeployState.ROLLED_BACK.value else 1), line


_OUTCOME = re.compile(r"exit (-?\d+): ?(.*)", re.S)


def _ended(row: dict[str, Any], held: str | None) -> tuple[int, str]:
    """The run's exit code and final line, from its drive row (``exit N: LAST LINE``)."""
    m = _OUTCOME.match(str(row.get("outcome") or ""))
    if m is None:
        return 1, f"the server's run ended: {row.get('outcome') or row['state']}"
    code = int(m.group(1))
    return (code if code >= 0 else 1), (held if held is not None else m.group(2))
