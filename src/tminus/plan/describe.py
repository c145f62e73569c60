"""One description per step kind, with two ways of showing its values.

:func:`describe_step` says what a step does, in one line of :data:`Text` (plain text with
``Code``/``Strong`` spans). *How* its values are shown is a :class:`Show`:

- :data:`AS_WRITTEN` (the runbook): values as written in the plan (``${…}`` included), long
  commands and SQL shortened with :func:`one_line`;
- ``tminus.steps.base.AsRun`` (the dry run, the console line of a step that starts): values
  resolved, commands as they will run, SQL with its bound values, nothing shortened (the
  caller masks secrets).

So the runbook and the dry run say the same words, one as written, the other as run. A step of
a third-party kind is described by its model's ``summary(show)`` if it has one. Nothing here
resolves or runs anything; credentials are never shown.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from tminus.plan._runbook_text import Code, Inline, Strong, Text, plain, txt
from tminus.plan._steps_kube import KubernetesStep, describe_kubernetes
from tminus.plan.checks import CheckBase, CheckUse
from tminus.plan.steps import (
    ApproveStep,
    BackupRef,
    BackupStep,
    BlueGreenStep,
    CanaryStep,
    FlagStep,
    HttpStep,
    MaintenanceStep,
    MigrateStep,
    NotifyStep,
    ReleaseStep,
    RestoreStep,
    RunStep,
    SnapshotStep,
    SqlStep,
    SshStep,
    StepBase,
    TrafficStep,
    UploadStep,
    VerifyBackupStep,
    WaitStep,
)
from tminus.plan.values import format_duration

__all__ = [
    "AS_WRITTEN",
    "DESCRIBERS",
    "MIGRATE_BEFORE_PREFIX",
    "AsWritten",
    "Show",
    "command_text",
    "describe_step",
    "one_line",
    "plain",
    "ref_name_hint",
]

_MAX = 160

#: ``revision`` of a migrate step's built-in undo: ``before:<step key>``, "down to the version
#: recorded before that step" (written by ``tminus.steps.migrate``, never in a plan).
MIGRATE_BEFORE_PREFIX = "before:"


def one_line(text: str, limit: int = _MAX) -> str:
    """Collapse whitespace; shorten past ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def command_text(command: str | list[str]) -> str:
    """A command as written, on one line, shortened."""
    return one_line(command if isinstance(command, str) else shlex.join(command))


def ref_name_hint(ref: CheckBase | CheckUse) -> str:
    """A check's name without resolving: its ``name``, the name it uses, or its source."""
    if ref.name:
        return ref.name
    if isinstance(ref, CheckUse):
        return ref.use
    return f"{getattr(ref, 'source', 'inline')} check"


class Show(Protocol):
    """How a description shows the step's values."""

    #: Shorten long text (a printed page), or show it whole (a dry run, a console line).
    brief: bool

    def value(self, text: str) -> str:
        """A field that may hold ``${…}``."""
        ...

    def command(self, cmd: str | list[str]) -> str:
        """A shell command (a string) or an argv (a list)."""
        ...

    def sql(self, statements: list[str], params: dict[str, Any]) -> str:
        """SQL statements (of a sql step, with its ``params``)."""
        ...

    def duration(self, td: timedelta) -> str:
        """A duration, which may be written with ``${…}`` (``pause: ${hold}``)."""
        ...


class AsWritten:
    """Values as written in the plan; commands and SQL shortened to one line."""

    brief: bool = True

    def value(self, text: str) -> str:
        return text

    def command(self, cmd: str | list[str]) -> str:
        return command_text(cmd)

    def sql(self, statements: list[str], params: dict[str, Any]) -> str:
        return one_line("; ".join(statements))

    def duration(self, td: timedelta) -> str:
        return format_duration(td)


#: The runbook's way: values as written, long commands and SQL shortened.
AS_WRITTEN: Show = AsWritten()


# --- helpers ---------------------------------------------------------------------------------


def _prose(show: Show, text: str) -> str:
    """A message: on one line and shortened on a page, whole otherwise."""
    shown = show.value(text)
    return one_line(shown) if show.brief else shown


def _code_list(names: list[str], sep: str = ", ") -> Text:
    out: list[Inline] = []
    for i, name in enumerate(names):
        if i:
            out.append(sep)
        out.append(Code(name))
    return tuple(out)


def _batch(value: int | str | list[int | str] | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return "batches " + " → ".join(str(v) for v in value)
    return f"batches of {value}"


def _extras(*parts: str | None) -> str:
    kept = [p for p in parts if p]
    return f" ({', '.join(kept)})" if kept else ""


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _fleet(s: SshStep | UploadStep | ReleaseStep) -> list[str | None]:
    """A fleet step's batches and failures tolerated."""
    return [
        "once" if getattr(s, "run_once", False) else _batch(s.batch),
        f"max {s.max_fail} failures" if s.max_fail not in (0, "0") else None,
        f"max {s.max_fail_per_batch} failures per batch"
        if s.max_fail_per_batch is not None
        else None,
        "no first-batch canary" if s.batch is not None and not s.first_batch_canary else None,
    ]


def _where(show: Show, on: str, path: str) -> Code:
    return Code(f"{show.value(on)}:{show.value(path)}")


# --- one describer per kind ------------------------------------------------------------------


def _run(s: RunStep, show: Show) -> Text:
    return txt(
        "Run ",
        Code(show.command(s.command)),
        txt(" in ", Code(show.value(s.cwd))) if s.cwd else None,
    )


def _ssh(s: SshStep, show: Show) -> Text:
    extra = _extras(
        *_fleet(s),
        "as root" if s.become is True else (f"as {s.become}" if s.become else None),
    )
    return txt(
        "On ",
        Code(show.value(s.on)),
        ": ",
        Code(show.command(s.command)),
        txt(" in ", Code(show.value(s.cwd))) if s.cwd else None,
        extra,
    )


def _http(s: HttpStep, show: Show) -> Text:
    status = s.expect.status
    body = s.expect.body_contains
    want = _extras(
        f"expect {status}" if status is not None else None,
        f'body contains "{show.value(body)}"' if body else None,
        f"within {show.duration(s.expect.max_latency)}" if s.expect.max_latency else None,
    )
    return txt(f"{s.method} ", Code(show.value(s.url)), want)


def _sql(s: SqlStep, show: Show) -> Text:
    stmts: Text = ()
    if s.statements:
        more = len(s.statements) - 1 if show.brief else 0
        shown = s.statements[:1] if show.brief else s.statements
        stmts = txt(Code(show.sql(shown, dict(s.params))), f" (+{more} more)" if more else None)
    what = txt(
        stmts,
        txt(", then " if stmts else None, "file ", Code(show.value(s.file))) if s.file else None,
    )
    return txt("SQL on ", Code(s.database), ": ", what)


def _wait(s: WaitStep, show: Show) -> Text:
    if s.until is not None:
        every = f" (every {show.duration(s.interval)})" if s.interval else ""
        limit = f", at most {show.duration(s.duration)}" if s.duration else ""
        return txt("Wait until ", Strong(ref_name_hint(s.until)), " passes", every, limit)
    return txt(f"Wait {show.duration(s.duration) if s.duration is not None else '-'}")


def _approve(s: ApproveStep, show: Show) -> Text:
    return txt(
        "Approval by ", _code_list(s.roles), f": {_prose(show, s.message)}" if s.message else None
    )


def _maint(s: MaintenanceStep, show: Show) -> Text:
    how = s.enable if s.action == "on" else s.disable
    if s.flag_file:  # the flag file is what turns it on or off; a command would not run
        way = txt(" (flag file ", Code(show.value(s.flag_file)), ")")
    else:
        way = txt(" via ", Code(show.command(how))) if how else ()
    return txt(f"Maintenance mode {s.action.upper()}", way)


def _notify(s: NotifyStep, show: Show) -> Text:
    chans = txt(" to ", _code_list(s.channels)) if s.channels else txt(" to all channels")
    sev = f" [{s.severity}]" if s.severity != "info" else ""
    return txt(f"Notify{sev}", chans, f': "{_prose(show, s.message)}"')


def _backup(s: BackupStep, show: Show) -> Text:
    what = txt("database ", Code(s.database)) if s.database else txt("path ", Code(s.path or ""))
    return txt(
        "Back up ",
        what,
        txt(" to ", Code(show.value(s.dest))) if s.dest else None,
        f" (verified, jobs {s.jobs})",
    )


def _backup_from(ref: str | BackupRef) -> Text:
    if isinstance(ref, str):
        return txt(Code(ref))
    if ref.deploy == "latest":
        return txt(Code(ref.backup), " of the latest deploy that made it")
    return txt(Code(ref.backup), " of deploy ", Code(ref.deploy))


def _restore(s: RestoreStep, show: Show) -> Text:
    target = s.database or s.path
    return txt(
        "Restore ",
        Code(target) if target else "its own target",
        " from backup ",
        _backup_from(s.from_),
        " (checksums first, then compare)",
    )


def _verify_backup(s: VerifyBackupStep, show: Show) -> Text:
    return txt(
        "Verify backup ",
        _backup_from(s.from_),
        " by restoring it into a scratch copy (compare, then drop the copy)",
    )


def _migrate_tool(s: MigrateStep, show: Show, down: bool) -> Text:
    if s.tool == "alembic":
        how = (
            txt("alembic downgrade")
            if down
            else txt("alembic upgrade ", Code(show.value(s.revision)))
        )
        return txt(how, txt(" (config ", Code(show.value(s.config)), ")") if s.config else None)
    if s.tool == "sql_dir":
        goal = (
            "" if down else (f" up to version {s.to}" if s.to is not None else " up to the newest")
        )
        return txt("SQL files in ", Code(show.value(s.dir or "")), goal)
    cmd = s.down if down else s.up
    return txt(Code(show.command(cmd))) if cmd else ()


def _migrate(s: MigrateStep, show: Show) -> Text:
    if s.revision.startswith(MIGRATE_BEFORE_PREFIX):  # the built-in undo of a migrate step
        key = s.revision[len(MIGRATE_BEFORE_PREFIX) :]
        version = "revision" if s.tool == "alembic" else "version"
        tool = _migrate_tool(s, show, down=True)
        return txt(
            "Migrate ",
            Code(s.database),
            f" back down to the {version} recorded before ",
            Code(key),
            txt(" with ", tool) if tool else " (no down command)",
        )
    back = {"down": "migrate down", "restore": f"restore backup {s.backup}", "none": "none"}
    return txt(
        "Migrate ",
        Code(s.database),
        " with ",
        _migrate_tool(s, show, down=False),
        f"; on rollback: {back[s.on_rollback]}",
    )


def _snapshot(s: SnapshotStep, show: Show) -> Text:
    return txt("Snapshot tables, indexes and counts of ", _code_list(s.databases + s.paths))


def _upload(s: UploadStep, show: Show) -> Text:
    return txt(
        "Upload ",
        Code(show.value(s.src)),
        " to ",
        _where(show, s.on, s.dest),
        _extras(f"mode {s.mode}" if s.mode else None, *_fleet(s)),
    )


def _release(s: ReleaseStep, show: Show) -> Text:
    if s.action == "rollback":
        return txt(
            "Switch ",
            Code("current"),
            " back from release ",
            Code(show.value(s.release_id or "")),
            " on ",
            _where(show, s.on, s.path),
            _extras(*_fleet(s)),
        )
    shared = f"shared: {', '.join(s.shared)}" if s.shared else None
    return txt(
        "Release ",
        Code(show.value(s.source)),
        " to ",
        _where(show, s.on, s.path),
        txt(" as ", Code(f"releases/{show.value(s.release_id)}")) if s.release_id else None,
        " and switch ",
        Code("current"),
        _extras(*_fleet(s), shared, f"keep {s.keep}"),
    )


def _weights(weights: dict[str, int]) -> str:
    return ", ".join(f"{pool} {w}%" for pool, w in weights.items())


def _traffic(s: TrafficStep, show: Show) -> Text:
    if s.restore is not None:
        return txt(
            "Router ", Code(s.router), ": back to the split recorded before ", Code(s.restore)
        )
    return txt("Router ", Code(s.router), f": {_weights(s.weights)}")


def _flag(s: FlagStep, show: Show) -> Text:
    where = txt("Flag ", Code(show.value(s.flag)), " in ", Code(s.store))
    if s.restore is not None:
        return txt(where, " → back to its state before ", Code(s.restore))
    state = [f"{s.percentage:g}%"] if s.percentage is not None else []
    if s.enabled is not None:
        state.append("on" if s.enabled else "off")
    return txt(where, f" → {', '.join(state)}")


def _pause(p: timedelta | str | None, show: Show) -> str:
    if isinstance(p, timedelta):
        return f" (hold {show.duration(p)})"
    return " (manual promotion)" if p == "manual" else ""


def _canary(s: CanaryStep, show: Show) -> Text:
    ramp = " → ".join(f"{w.weight}%{_pause(w.pause, show)}" for w in s.steps)
    if s.steps[-1].weight == 100:
        end = ""
    else:
        end = ", then promote to 100%" if s.promote else ", then hold the last weight"
    names = ", ".join(ref_name_hint(c) for c in s.analysis)
    analysis = f"; analysis: {_count(len(s.analysis), 'check')} ({names})" if s.analysis else None
    return txt(
        "Canary on ",
        Code(s.router),
        ": ",
        Code(s.canary),
        f" at {ramp}{end} (stable ",
        Code(s.stable),
        ")",
        analysis,
    )


def _blue_green(s: BlueGreenStep, show: Show) -> Text:
    names = ", ".join(ref_name_hint(c) for c in s.preview)
    preview = f", preview {_count(len(s.preview), 'check')} ({names})" if s.preview else None
    keep = (
        f"; switch-back window {show.duration(s.rollback_window)} (keep {s.active})"
        if s.rollback_window
        else ""
    )
    return txt(
        "Blue/green on ",
        Code(s.router),
        ": deploy to idle ",
        Code(s.idle),
        f" ({_count(len(s.deploy), 'step')})",
        preview,
        ", switch from ",
        Code(s.active),
        keep,
    )


#: The description of each built-in step model.
DESCRIBERS: dict[type[StepBase], Callable[[Any, Show], Text]] = {
    RunStep: _run,
    SshStep: _ssh,
    HttpStep: _http,
    SqlStep: _sql,
    WaitStep: _wait,
    ApproveStep: _approve,
    MaintenanceStep: _maint,
    NotifyStep: _notify,
    BackupStep: _backup,
    RestoreStep: _restore,
    VerifyBackupStep: _verify_backup,
    MigrateStep: _migrate,
    SnapshotStep: _snapshot,
    UploadStep: _upload,
    ReleaseStep: _release,
    TrafficStep: _traffic,
    FlagStep: _flag,
    CanaryStep: _canary,
    BlueGreenStep: _blue_green,
    KubernetesStep: describe_kubernetes,  # its patch is the plan's (plan._steps_kube)
}


def describe_step(step: StepBase, show: Show) -> Text:
    """What ``step`` does, in one line, its values shown by ``show``. A step of a kind that is
    not built in: its model's ``summary(show)`` (a str or a Text) if it has one, else its kind
    (and its ``description``)."""
    describer = DESCRIBERS.get(type(step))
    if describer is not None:
        return describer(step, show)
    summary = getattr(step, "summary", None)
    if callable(summary):
        said = summary(show)
        return txt(said) if isinstance(said, str | tuple) else txt(str(said))
    kind = str(getattr(step, "kind", "step"))
    return txt(f"{kind} step", f": {_prose(show, step.description)}" if step.description else None)
