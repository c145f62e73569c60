"""Processes on this host from /proc: a pid's fields and its start token (which, with the pid,
names one process for good). Used by the runner's liveness rule and by :mod:`tminus.work`."""

from __future__ import annotations

__all__ = ["pid_token", "proc_stat"]


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (``[0]`` is field 3, the state;
    ``[19]`` is field 22, the start time), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2 :].split()


def pid_token(pid: int) -> str | None:
    """The start time of ``pid`` (field 22 of /proc/PID/stat, clock ticks since boot): with
    the pid it names one process for good, so a reused pid is never taken for it. None when
    the pid does not exist, or is a zombie (it has exited)."""
    fields = proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return fields[19]
