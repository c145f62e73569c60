"""Work that really stops when its task is cancelled.

The engine cancels a step's task on a timeout or an abort and waits (bounded) for it. Every
blocking piece of work must then stop *before* the ``CancelledError`` propagates, so that
nothing a step started keeps running (and committing) after the engine moved on:

* :func:`in_thread` replaces ``asyncio.to_thread``. The function runs in a daemon thread with
  a fresh *cancel scope* (a context variable). When the awaiting task is cancelled, the scope
  is marked cancelled, its cancel callbacks run (in a helper thread, again every second while
  the worker lives: e.g. a SQL cancel sent to the server), every process group it spawned gets
  SIGTERM, then SIGKILL after :func:`grace_s`; then the thread is awaited (bounded:
  grace + 10 s). It returned: ``CancelledError`` is re-raised. It did not: :class:`WorkNotStopped`.
* Inside the thread, :func:`popen` starts child processes in their own session (so a group
  kill reaches grandchildren) and registers them in the scope; :func:`on_cancel` registers a
  callback; :func:`cancelled` is the cooperative check.
* Every process group started is reported to the process-wide :class:`ProcSink` (the engine
  records it in its store), so that after a crashed runner :func:`reap` can kill the orphans.
  ``ProcRecord.token`` (the start time in ``/proc/PID/stat``) defeats pid reuse.

Exceptions: :class:`WorkNotStopped` (an ``Exception``) when cancelled work could not be
confirmed stopped; ``asyncio.CancelledError`` everywhere else, also from :func:`popen` called
in a scope that is already cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tminus.procfs import proc_stat as _stat

__all__ = [
    "GRACE_S",
    "ProcRecord",
    "ProcSink",
    "WorkNotStopped",
    "add_cancel",
    "cancelled",
    "grace_s",
    "in_scope",
    "in_thread",
    "on_cancel",
    "popen",
    "proc_token",
    "reap",
    "set_sink",
    "shielded",
    "stop_group",
    "track",
]

T = TypeVar("T")

GRACE_S: float = 5.0
_EXTRA_WAIT_S = 10.0
_POLL_S = 0.05


@dataclass(frozen=True)
class ProcRecord:
    host: str  # "localhost", or the inventory name of an SSH host
    pid: int  # the process-group leader's pid (== its pgid)
    token: str  # Linux: field 22 (start time) of /proc/PID/stat; "" if unknown


class ProcSink(Protocol):
    def started(self, rec: ProcRecord) -> None: ...


class WorkNotStopped(Exception):
    """Cancelled work could not be confirmed stopped within the bound."""


_sink: ProcSink | None = None


def set_sink(sink: ProcSink | None) -> None:
    """Where process groups are reported. Called from the thread that spawned the group
    (the event loop, or an :func:`in_thread` worker): a sink must be thread-safe."""
    global _sink
    _sink = sink


def track(rec: ProcRecord) -> None:
    """Report a process group to the sink (a failing sink never stops the work)."""
    sink = _sink
    if sink is not None:
        with contextlib.suppress(Exception):
            sink.started(rec)


def grace_s() -> float:
    """SIGTERM -> SIGKILL grace: ``TMINUS_KILL_GRACE_S`` when set, else :data:`GRACE_S`."""
    try:
        return max(0.0, float(os.environ["TMINUS_KILL_GRACE_S"]))
    except (KeyError, ValueError):
        return GRACE_S


# --------------------------------------------------------------------------- /proc


def proc_token(pid: int) -> str:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), "" if unknown."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def _members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of group ``pgid``."""
    out = []
    for name in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if name.isdigit():
            f = _stat(int(name))
            if f and len(f) > 2 and f[2] == str(pgid) and f[0] != "Z":
                out.append(int(name))
    return out


def _alive(pgid: int, token: str = "") -> bool:
    """Does group ``pgid`` still have live members, and is it the one ``token`` started?"""
    if not os.path.isdir("/proc"):  # no /proc: ask the kernel, no pid-reuse check
        try:
            os.killpg(pgid, 0)
        except OSError:
            return False
        return True
    f = _stat(pgid)
    if f is not None and token and len(f) > 19 and f[19] != token:
        return False  # the leader's pid now belongs to another process
    return bool(_members(pgid))


def _signal(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def stop_group(pgid: int, token: str = "", grace: float | None = None) -> bool:
    """SIGTERM group ``pgid``, wait up to the grace for it to end, SIGKILL, wait (bounded) until
    it is gone. False when there was no such live group (nothing was signalled)."""
    if pgid <= 1 or not _alive(pgid, token):
        return False
    grace = grace_s() if grace is None else grace
    _signal(pgid, signal.SIGTERM)
    for sig, bound in ((signal.SIGKILL, grace), (None, _EXTRA_WAIT_S)):
        end = time.monotonic() + bound
        while _members(pgid) and time.monotonic() < end:
            await asyncio.sleep(_POLL_S)
        if sig is not None and _members(pgid):
            _signal(pgid, sig)
    return True


async def shielded(aw: Coroutine[Any, Any, T]) -> T:
    """Run ``aw`` to its end even if the caller is cancelled meanwhile (cleanup code); a
    cancellation that arrived is re-raised afterwards."""
    task = asyncio.ensure_future(aw)
    hit = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            hit = True
    if hit:
        raise asyncio.CancelledError
    return result


# --------------------------------------------------------------------------- scopes


class _Scope:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        self.callbacks: dict[int, Callable[[], None]] = {}
        self.procs: list[ProcRecord] = []
        self.ids = itertools.count()

    def fire(self) -> None:
        with self.lock:
            callbacks = list(self.callbacks.values())
        for cb in callbacks:
            with contextlib.suppress(Exception):
                cb()


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("tminus_work", default=None)


def in_scope() -> bool:
    """Does this code run inside :func:`in_thread`?"""
    return _scope.get() is not None


def cancelled() -> bool:
    """Has the :func:`in_thread` call this code runs in been cancelled?"""
    scope = _scope.get()
    return scope is not None and scope.cancelled


def add_cancel(callback: Callable[[], None]) -> Callable[[], None]:
    """Like :func:`on_cancel`, for a lifetime that is not a block (a connection): registers
    ``callback`` and returns the function that unregisters it."""
    scope = _scope.get()
    if scope is None:
        return lambda: None
    with scope.lock:
        key = next(scope.ids)
        scope.callbacks[key] = callback
        now = scope.cancelled
    if now:
        with contextlib.suppress(Exception):
            callback()

    def remove() -> None:
        with scope.lock:
            scope.callbacks.pop(key, None)

    return remove


@contextlib.contextmanager
def on_cancel(callback: Callable[[], None]) -> Iterator[None]:
    """Run ``callback`` (from another thread) if the enclosing :func:`in_thread` is cancelled
    while the block runs; right away if it already was. Outside a scope: no effect."""
    remove = add_cancel(callback)
    try:
        yield
    finally:
        remove()


def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` in a new session, registered in the current scope (its group is
    killed on cancel) and reported to the sink."""
    kwargs["start_new_session"] = True
    scope = _scope.get()
    with scope.lock if scope is not None else contextlib.nullcontext():
        if scope is not None and scope.cancelled:
            raise asyncio.CancelledError(f"not starting {argv[0]}: the work was cancelled")
        proc: subprocess.Popen[bytes] = subprocess.Popen(argv, **kwargs)
        rec = ProcRecord("localhost", proc.pid, proc_token(proc.pid))
        if scope is not None:
            scope.procs.append(rec)
    track(rec)
    return proc


def _in_daemon(loop: asyncio.AbstractEventLoop, fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run ``fn`` in a new daemon thread (in a copy of the current context): a thread that
    never returns cannot block the interpreter's exit, nor a shared executor."""
    fut: asyncio.Future[T] = loop.create_future()
    ctx = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            fut.set_result(value) if ok else fut.set_exception(value)

    def body() -> None:
        try:
            result: Any = ctx.run(fn)
            ok = True
        except BaseException as exc:  # handed to the awaiting task
            result, ok = exc, False
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, ok, result)

    threading.Thread(target=body, name="tminus-work", daemon=True).start()
    return fut


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Like ``asyncio.to_thread``, but cancelling the awaiting task stops the work (see the
    module docstring)."""
    loop = asyncio.get_running_loop()
    scope = _Scope()

    def body() -> T:
        _scope.set(scope)
        return fn(*args, **kwargs)

    fut = _in_daemon(loop, body)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        if fut.done() and not fut.cancelled():
            fut.exception()  # retrieved: the work ended anyway
            raise
        stopped = await shielded(_stop(loop, scope, fut))
        if not stopped:
            name = getattr(fn, "__qualname__", repr(fn))
            alive = [r.pid for r in scope.procs if _alive(r.pid, r.token)]
            raise WorkNotStopped(
                f"cancelled work {name} did not stop"
                + (f"; process groups still running: {alive}" if alive else "")
            ) from None
        raise


async def _stop(loop: asyncio.AbstractEventLoop, scope: _Scope, fut: asyncio.Future[Any]) -> bool:
    grace = grace_s()
    end = time.monotonic() + grace + _EXTRA_WAIT_S
    with scope.lock:
        scope.cancelled = True
        procs = list(scope.procs)  # popen refuses new ones from now on
    stops = [asyncio.ensure_future(stop_group(r.pid, r.token, grace)) for r in procs]
    while not fut.done() and time.monotonic() < end:
        await asyncio.wait([_in_daemon(loop, scope.fire)], timeout=5)
        await asyncio.wait([fut], timeout=1.0)
    if stops:
        await asyncio.wait(stops, timeout=max(0.1, end - time.monotonic()))
    if fut.done() and not fut.cancelled():
        fut.exception()
    return fut.done() and not any(_alive(r.pid, r.token) for r in procs)


# --------------------------------------------------------------------------- reap


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:80]
    except OSError:
        return ""


async def reap(
    records: list[ProcRecord], remote: Callable[[ProcRecord], Awaitable[bool]] | None = None
) -> list[str]:
    """Kill what a dead runner left running: every recorded group still alive (and started
    by it: same token) gets SIGTERM, SIGKILL after the grace. One line per group killed."""

    async def one(rec: ProcRecord) -> str | None:
        if rec.host != "localhost":
            if remote is not None and await remote(rec):
                return f"killed process group {rec.pid} on {rec.host}"
            return None
        what = _cmdline(rec.pid)
        if not await stop_group(rec.pid, rec.token):
            return None
        return f"killed process group {rec.pid} on localhost" + (f" ({what})" if what else "")

    # Records of one group (a pid recorded twice, with different tokens) go one after the
    # other: run side by side, a check of the second could find the leader just killed by
    # the first, its token no longer readable, the group still ending, and claim it too.
    by_group: dict[tuple[str, int], list[ProcRecord]] = {}
    for r in records:
        by_group.setdefault((r.host, r.pid), []).append(r)

    async def in_turn(recs: list[ProcRecord]) -> list[str]:
        return [line for r in recs if (line := await one(r))]

    lines = await asyncio.gather(*(in_turn(g) for g in by_group.values()))
    return [line for group in lines for line in group]
