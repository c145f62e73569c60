"""One-line descriptions of steps and checks for the runbook: what each step kind does, the
steps nested in a step, what rollback runs on its own, and where a check's value comes from.
Values are printed as written in the plan, never interpolated; credentials are never printed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tminus.plan._runbook_text import Code, Inline, Strong, Text, txt
from tminus.plan.checks import (
    BackupCheck,
    CheckBase,
    CheckUse,
    CommandCheck,
    FileCountCheck,
    HaproxyCheck,
    HttpCheck,
    NoDataLossCheck,
    ProbeCheck,
    PrometheusCheck,
    SqlCheck,
)
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

_MAX = 160


def one_line(text: str, limit: int = _MAX) -> str:
    """Collapse whitespace; shorten past ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def command_text(command: str | list[str]) -> str:
    import shlex

    return one_line(command if isinstance(command, str) else shlex.join(command))


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


def _run(s: RunStep) -> Text:
    return txt("Run ", Code(command_text(s.command)), txt(" in ", Code(s.cwd)) if s.cwd else None)


def _ssh(s: SshStep) -> Text:
    extra = _extras(
        "once" if s.run_once else _batch(s.batch),
        f"max {s.max_fail} failures" if s.max_fail else None,
        "as root" if s.become is True else (f"as {s.become}" if s.become else None),
    )
    return txt("On ", Code(s.on), ": ", Code(command_text(s.command)), extra)


def _http(s: HttpStep) -> Text:
    status = s.expect.status
    want = _extras(
        f"expect {status}" if status is not None else None,
        f'body contains "{s.expect.body_contains}"' if s.expect.body_contains else None,
        f"within {format_duration(s.expect.max_latency)}" if s.expect.max_latency else None,
    )
    return txt(f"{s.method} ", Code(s.url), want)


def _sql(s: SqlStep) -> Text:
    if s.file:
        what: Text = txt("file ", Code(s.file))
    else:
        more = len(s.statements) - 1
        what = txt(Code(one_line(s.statements[0])), f" (+{more} more)" if more else None)
    return txt("SQL on ", Code(s.database), ": ", what)


def _wait(s: WaitStep) -> Text:
    if s.until is not None:
        every = f" (every {format_duration(s.interval)})" if s.interval else ""
        limit = f", at most {format_duration(s.duration)}" if s.duration else ""
        return txt("Wait until ", Strong(ref_name_hint(s.until)), " passes", every, limit)
    return txt(f"Wait {format_duration(s.duration)}")


def _approve(s: ApproveStep) -> Text:
    return txt(
        "Approval by ", _code_list(s.roles), f": {one_line(s.message)}" if s.message else None
    )


def _maint(s: MaintenanceStep) -> Text:
    how = s.enable if s.action == "on" else s.disable
    return txt(
        f"Maintenance mode {s.action.upper()}",
        txt(" via ", Code(one_line(how))) if how else None,
        txt(" (flag file ", Code(s.flag_file), ")") if s.flag_file else None,
    )


def _notify(s: NotifyStep) -> Text:
    chans = txt(" to ", _code_list(s.channels)) if s.channels else txt(" to all channels")
    sev = f" [{s.severity}]" if s.severity != "info" else ""
    return txt(f"Notify{sev}", chans, f': "{one_line(s.message)}"')


def _backup(s: BackupStep) -> Text:
    what = txt("database ", Code(s.database)) if s.database else txt("path ", Code(s.path or ""))
    return txt("Back up ", what, txt(" to ", Code(s.dest)) if s.dest else None, " (verified)")


def _backup_from(ref: str | BackupRef) -> Text:
    if isinstance(ref, str):
        return txt(Code(ref))
    if ref.deploy == "latest":
        return txt(Code(ref.backup), " of the latest deploy that made it")
    return txt(Code(ref.backup), " of deploy ", Code(ref.deploy))


def _restore(s: RestoreStep) -> Text:
    target = s.database or s.path
    return txt("Restore ", Code(target) if target else None, " from backup ", _backup_from(s.from_))


def _verify_backup(s: VerifyBackupStep) -> Text:
    return txt("Verify backup ", _backup_from(s.from_), " by restoring it into a scratch copy")


def _migrate_target(s: MigrateStep) -> Text:
    if s.tool == "alembic":
        return txt("alembic upgrade ", Code(s.revision))
    if s.tool == "sql_dir":
        return txt("SQL files in ", Code(s.dir or ""), f" up to {s.to}" if s.to is not None else "")
    return txt(Code(command_text(s.up or "")))


def _migrate(s: MigrateStep) -> Text:
    back = {"down": "migrate down", "restore": f"restore backup {s.backup}", "none": "none"}
    return txt(
        "Migrate ",
        Code(s.database),
        " with ",
        _migrate_target(s),
        f"; on rollback: {back[s.on_rollback]}",
    )


def _snapshot(s: SnapshotStep) -> Text:
    return txt("Snapshot tables, indexes and counts of ", _code_list(s.databases + s.paths))


def _upload(s: UploadStep) -> Text:
    return txt("Upload ", Code(s.src), " to ", Code(f"{s.on}:{s.dest}"), _extras(s.mode))


def _release(s: ReleaseStep) -> Text:
    shared = f"shared: {', '.join(s.shared)}" if s.shared else None
    return txt(
        "Release ",
        Code(s.source),
        " to ",
        Code(f"{s.on}:{s.path}"),
        " and switch ",
        Code("current"),
        _extras(_batch(s.batch), shared, f"keep {s.keep}"),
    )


def _weights(weights: dict[str, int]) -> str:
    return ", ".join(f"{pool} {w}%" for pool, w in weights.items())


def _traffic(s: TrafficStep) -> Text:
    return txt("Router ", Code(s.router), f": {_weights(s.weights)}")


def _flag(s: FlagStep) -> Text:
    state = f"{s.percentage:g}%" if s.percentage is not None else ("on" if s.enabled else "off")
    return txt("Flag ", Code(s.flag), " in ", Code(s.store), f" → {state}")


def _pause(p: timedelta | str | None) -> str:
    if isinstance(p, timedelta):
        return f" (hold {format_duration(p)})"
    return " (manual promotion)" if p == "manual" else ""


def _canary(s: CanaryStep) -> Text:
    ramp = " → ".join(f"{w.weight}%{_pause(w.pause)}" for w in s.steps)
    analysis = (
        txt("; analysis: ", ", ".join(ref_name_hint(c) for c in s.analysis)) if s.analysis else None
    )
    return txt(
        "Canary on ",
        Code(s.router),
        ": ",
        Code(s.canary),
        f" at {ramp} (stable ",
        Code(s.stable),
        ")",
        analysis,
    )


def _blue_green(s: BlueGreenStep) -> Text:
    preview = txt(", check ", ", ".join(ref_name_hint(c) for c in s.preview)) if s.preview else None
    keep = f"; switch-back window {format_duration(s.rollback_window)}" if s.rollback_window else ""
    return txt(
        "Blue/green on ",
        Code(s.router),
        ": deploy to idle ",
        Code(s.idle),
        preview,
        ", switch from ",
        Code(s.active),
        keep,
    )


SUMMARIZERS: dict[str, Callable[[Any], Text]] = {
    "run": _run,
    "ssh": _ssh,
    "http": _http,
    "sql": _sql,
    "wait": _wait,
    "approve": _approve,
    "maintenance": _maint,
    "notify": _notify,
    "backup": _backup,
    "restore": _restore,
    "verify_backup": _verify_backup,
    "migrate": _migrate,
    "snapshot": _snapshot,
    "upload": _upload,
    "release": _release,
    "traffic": _traffic,
    "flag": _flag,
    "canary": _canary,
    "blue_green": _blue_green,
}


def summarize_step(step: StepBase) -> Text:
    """What a step does, in one line; a generic line for kinds without a summarizer."""
    kind = str(getattr(step, "kind", "step"))
    summarizer = SUMMARIZERS.get(kind)
    if summarizer is None:
        return txt(f"{kind} step", f": {one_line(step.description)}" if step.description else None)
    return summarizer(step)


def nested_steps(step: StepBase) -> list[tuple[str, StepBase]]:
    """Steps inside a step (ssh batch hooks, blue/green deploy), with their role."""
    out: list[tuple[str, StepBase]] = []
    if isinstance(step, SshStep):
        out += [("before each batch", s) for s in step.before_batch]
        out += [("after each batch", s) for s in step.after_batch]
    if isinstance(step, BlueGreenStep):
        out += [("deploy to idle pool", s) for s in step.deploy]
    return out


def automatic_compensation(step: StepBase) -> Text | None:
    """What the engine runs on rollback for this step on its own (besides its ``undo:``)."""
    if isinstance(step, MaintenanceStep) and step.action == "on":
        return txt("Maintenance mode OFF")
    if isinstance(step, MigrateStep):
        if step.on_rollback == "restore":
            return txt("Restore ", Code(step.database), " from backup ", Code(step.backup or ""))
        if step.on_rollback == "down":
            down = txt(" (", Code(command_text(step.down)), ")") if step.down else None
            return txt("Migrate ", Code(step.database), " back down to its previous version", down)
        return None
    if isinstance(step, ReleaseStep):
        return txt(
            "Switch ", Code(f"{step.on}:{step.path}/current"), " back to the previous release"
        )
    if isinstance(step, TrafficStep):
        return txt("Router ", Code(step.router), ": traffic back to the weights before this step")
    if isinstance(step, CanaryStep):
        return txt(
            "Router ", Code(step.router), ": 100% of traffic back to stable ", Code(step.stable)
        )
    if isinstance(step, BlueGreenStep):
        return txt("Router ", Code(step.router), ": switch back to ", Code(step.active))
    return None


# --- checks ---------------------------------------------------------------------------------


def ref_name_hint(ref: CheckBase | CheckUse) -> str:
    """A check's name without resolving: its ``name``, the name it uses, or its source."""
    if ref.name:
        return ref.name
    if isinstance(ref, CheckUse):
        return ref.use
    return f"{getattr(ref, 'source', 'inline')} check"


def check_source(check: CheckBase | None) -> Text:
    """Where a check's value comes from, in one line."""
    if check is None:
        return txt("(unknown check)")
    if isinstance(check, CommandCheck):
        out = txt("command ", Code(command_text(check.command)))
    elif isinstance(check, HttpCheck | ProbeCheck):
        verb = check.method if isinstance(check, HttpCheck) else f"probe {check.rate:g}/s"
        out = txt(f"{verb} ", Code(check.url))
    elif isinstance(check, SqlCheck):
        out = txt("SQL on ", Code(check.database), ": ", Code(one_line(check.query)))
    elif isinstance(check, FileCountCheck):
        out = txt("files in ", Code(check.path), " matching ", Code(check.pattern))
    elif isinstance(check, PrometheusCheck):
        out = txt(
            "Prometheus ",
            Code(check.target) if check.target else None,
            " ",
            Code(one_line(check.query)),
        )
    elif isinstance(check, HaproxyCheck):
        where = "/".join(p for p in (check.backend, check.server) if p)
        out = txt("HAProxy ", Code(check.router), f" {where}" if where else None)
    elif isinstance(check, NoDataLossCheck):
        out = txt("no data lost since snapshot ", Code(check.snapshot))
    elif isinstance(check, BackupCheck):
        out = txt("restore test of backup ", Code(check.backup))
    else:
        out = txt(str(getattr(check, "source", "check")))
    return txt(out, f" [{check.metric}]" if check.metric else None)


def levels(check: CheckBase | None) -> tuple[str, str, str]:
    """(expect, warn, critical) as written, '' where absent."""
    if check is None:
        return ("", "", "")
    expect, warn, critical = (check.expect, check.warn, check.critical)
    return (str(expect or ""), str(warn or ""), str(critical or ""))


def condition_text(check: CheckBase | None) -> str:
    expect, warn, critical = levels(check)
    parts = [f"expect {expect}" if expect else "", f"WARN {warn}" if warn else ""]
    parts.append(f"CRITICAL {critical}" if critical else "")
    return "; ".join(p for p in parts if p)
