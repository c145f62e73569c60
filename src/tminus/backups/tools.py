"""Helpers the dump-tool drivers (postgres, mysql) share: require and run a dump tool (a
non-zero exit is a :class:`~tminus.backups.base.BackupError`, a cancelled step kills it), also
in the background, read its version, mask secrets in messages, and edit the database of a
server URL."""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import ParamSpec, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from tminus import work
from tminus.backups.base import BackupError, check_tools

__all__ = [
    "in_background",
    "kill_tool",
    "mask",
    "replace_database",
    "require_tools",
    "run_tool",
    "scratch_suffix",
    "tail",
    "tool_version",
    "url_database",
]


_P = ParamSpec("_P")
_T = TypeVar("_T")


def in_background(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
    """``fn(*args, **kwargs)`` in a thread of its own, in a copy of this context (a tool it
    starts joins the step's cancel scope); ``.result()`` gives its result or raises its
    error. For a short independent call (a tool's ``--version``, ``pg_restore --list``) that
    need not hold up the work beside it; a result never asked for is dropped."""
    future: Future[_T] = Future()
    ctx = contextvars.copy_context()

    def run() -> None:
        try:
            future.set_result(ctx.run(fn, *args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="tminus-tool", daemon=True).start()
    return future


def require_tools(kind: str) -> None:
    missing = check_tools(kind)
    if missing:
        raise BackupError("; ".join(missing))


def tool_version(binary: str) -> str:
    proc = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    if proc.returncode != 0:
        raise BackupError(f"{binary} --version exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str | None] = (),
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool (through :func:`tminus.work.popen`: a cancelled step kills it); a non-zero
    exit is a :class:`BackupError` with its stderr (masked)."""
    full_env = {**os.environ, **(env or {})}
    try:
        proc = work.popen(
            list(argv),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise BackupError(mask(f"{what} failed: {exc}", secrets)) from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        kill_tool(proc)
        raise BackupError(mask(f"{what} failed: {exc}", secrets)) from None
    except BaseException:
        kill_tool(proc)
        raise
    result = subprocess.CompletedProcess(
        list(argv), proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    )
    if result.returncode != 0:
        raise BackupError(
            mask(f"{what} failed (exit {result.returncode}): {tail(result.stderr)}", secrets)
        )
    return result


def kill_tool(proc: subprocess.Popen[bytes], *, read: bool = True) -> None:
    """SIGKILL a tool started by :func:`tminus.work.popen` (its whole group), then reap it
    (reading what is left of its pipes; ``read=False`` when a thread of the caller reads them
    to their end)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        if read:
            proc.communicate(timeout=30)
        else:
            proc.wait(timeout=30)


def tail(text: str, limit: int = 1500) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


# --------------------------------------------------------------------------- secrets


def mask(text: str, secrets: Iterable[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
            quoted = quote(s, safe="")
            if quoted != s:
                text = text.replace(quoted, "***")
    return text


def replace_database(url: str, name: str) -> str:
    """The same server URL with another database name in its path."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(name), parts.query, parts.fragment))


def url_database(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def scratch_suffix() -> str:
    return uuid.uuid4().hex[:10]
