"""Wake a process of this host at once: a deploy's runner after an abort request, a ``tminus
serve`` after a run was handed to it. Light on purpose (``os``, ``signal``, ``socket`` and
:mod:`tminus.procfs` only): ``tminus abort`` imports it before anything heavy.

The wake is ``SIGUSR1``. Whoever asks has recorded the request in the store first, so the
signal carries no data: it only says "read the store now" to a process that would otherwise
read it at its next poll (the runner every :data:`tminus.engine.attempt.ABORT_POLL_S`, the
server every tick). A process on another host is not signalled: it notices within its poll.

A signal never reaches the wrong process, nor one that would die of it:

- the pid must still be the process the row names: its start token (field 22 of
  ``/proc/PID/stat``) equals the recorded one, as the liveness rule checks, so a reused pid
  is never signalled;
- the process must *catch* SIGUSR1 (``SigCgt`` of ``/proc/PID/status``): a runner catches it
  only while its engine runs (the handler is installed by ``Engine._as_runner``), a server
  while it serves. The default action of SIGUSR1 is to terminate, so a runner of an older
  tminus, or one between two runs, is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tminus.procfs import pid_token

if TYPE_CHECKING:  # not imported at run time: `tminus abort` starts without asyncio
    import asyncio

__all__ = [
    "SEND",
    "WAKE_SIGNAL",
    "catch",
    "catches",
    "release",
    "wake_pid",
    "wake_runner",
    "wake_server",
]

#: The signal that wakes a runner or a server.
WAKE_SIGNAL = signal.SIGUSR1

#: False turns every wake off (requests are then noticed at the next poll, as before the wake
#: existed): ``bench/emergency.py`` sets it in its "old path" processes to measure both.
SEND = True


def catches(pid: int, sig: int = WAKE_SIGNAL) -> bool:
    """Does ``pid`` catch ``sig`` (a handler installed, not ignored nor the default)?"""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError, IndexError):
        return False
    return False


def wake_pid(pid: int | None, token: str | None, host: str | None) -> bool:
    """Send the wake to ``pid`` when it runs on this host, is still the process whose start
    token is ``token``, and catches the signal. True when it was sent."""
    if not SEND or not pid or not token or host != socket.gethostname() or pid == os.getpid():
        return False
    if pid_token(pid) != token or not catches(pid):
        return False
    try:
        os.kill(pid, WAKE_SIGNAL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wake_runner(d: dict[str, Any]) -> bool:
    """Wake the runner a deploy row names (``runner_pid``, ``runner_token``, ``host``)."""
    return wake_pid(d.get("runner_pid"), d.get("runner_token"), d.get("host"))


def wake_server(s: dict[str, Any]) -> bool:
    """Wake a ``tminus serve`` of the ``servers`` table (its id is ``host:pid:token``)."""
    token = str(s.get("id", "")).rsplit(":", 1)[-1]
    return wake_pid(s.get("pid"), token or None, s.get("host"))


def catch(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
    """Call ``callback`` in ``loop`` on each wake. False when no handler could be installed
    (not the main thread): then the process does not catch the signal and is never sent it."""
    try:
        loop.add_signal_handler(WAKE_SIGNAL, callback)
    except (RuntimeError, ValueError, OSError):
        return False
    return True


def release(loop: asyncio.AbstractEventLoop) -> None:
    """Remove the handler; the signal is ignored from then on rather than left to its default
    action (terminate), so a wake sent just as a run or a server ends cannot kill the process
    before it reports (the next sender sees the signal is no longer caught, and sends none)."""
    with contextlib.suppress(RuntimeError, ValueError, OSError):
        loop.remove_signal_handler(WAKE_SIGNAL)
        signal.signal(WAKE_SIGNAL, signal.SIG_IGN)
