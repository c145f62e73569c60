"""One-line descriptions of steps and checks for the runbook: what each step kind does (its one
description, :func:`tminus.plan.describe.describe_step`, values as written), the steps nested
in a step, what rollback runs on its own, and where a check's value comes from. Values are
printed as written in the plan, never interpolated; credentials are never printed."""

from __future__ import annotations

from tminus.plan._runbook_text import Code, Text, txt
from tminus.plan.checks import (
    BackupCheck,
    CheckBase,
    CommandCheck,
    FileCountCheck,
    HaproxyCheck,
    HttpCheck,
    NoDataLossCheck,
    ProbeCheck,
    PrometheusCheck,
    SqlCheck,
)
from tminus.plan.describe import AS_WRITTEN, command_text, describe_step, one_line, ref_name_hint
from tminus.plan.steps import (
    BlueGreenStep,
    CanaryStep,
    MaintenanceStep,
    MigrateStep,
    ReleaseStep,
    SshStep,
    StepBase,
    TrafficStep,
)

__all__ = [
    "automatic_compensation",
    "check_source",
    "command_text",
    "condition_text",
    "levels",
    "nested_steps",
    "one_line",
    "ref_name_hint",
    "summarize_step",
]


def summarize_step(step: StepBase) -> Text:
    """What a step does, in one line, values as written (:mod:`tminus.plan.describe`)."""
    return describe_step(step, AS_WRITTEN)


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
    """What the engine runs on rollback for this step on its own (besides its ``undo:``).
    Where the engine's undo is a step of the same kind (maintenance off, a release rolled
    back), it is described by that kind's one description, as the engine's log says it."""
    if isinstance(step, MaintenanceStep) and step.action == "on":
        return describe_step(step.model_copy(update={"action": "off"}), AS_WRITTEN)
    if isinstance(step, MigrateStep):
        if step.on_rollback == "restore":
            return txt("Restore ", Code(step.database), " from backup ", Code(step.backup or ""))
        if step.on_rollback == "down":
            down = txt(" (", Code(command_text(step.down)), ")") if step.down else None
            return txt("Migrate ", Code(step.database), " back down to its previous version", down)
        return None
    if isinstance(step, ReleaseStep) and step.action == "deploy":
        rid = step.release_id or "<this release>"  # default: the UTC time stamp it gets
        undo = step.model_copy(update={"action": "rollback", "release_id": rid})
        return describe_step(undo, AS_WRITTEN)
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
    """Expected value, WARN and CRITICAL in words (:mod:`tminus.plan._runbook_checks`)."""
    from tminus.plan._runbook_checks import expectation, threshold

    parts = [expectation(check), threshold(check, "warn"), threshold(check, "critical")]
    return "; ".join(p for p in parts if p)
