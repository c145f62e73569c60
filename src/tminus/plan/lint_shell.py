"""`tminus check`: references in command text that cannot be substituted safely.

Every field a shell runs — ``run`` and ``ssh`` commands (in phases, rollbacks, undo, fleet
hooks and operations), ``source: command`` checks, maintenance commands, ``migrate`` commands
and an nginx router's ``reload`` — is read as shell text by :mod:`tminus.plan.shellquote`;
a reference standing where no escape is certain (a comment, backquotes, arithmetic, …) is an
error, with the safe spelling as the hint. The same text is refused again before it runs.
"""

from __future__ import annotations

from collections.abc import Iterator

from tminus.plan import shellquote
from tminus.plan.checks import CommandCheck
from tminus.plan.model import Plan
from tminus.plan.problems import Loc, Problem
from tminus.plan.steps import MaintenanceStep, MigrateStep, RunStep, SshStep
from tminus.plan.targets import NginxRouter
from tminus.plan.walk import iter_check_sites, iter_steps

__all__ = ["command_fields", "shell_problems"]


def _command(value: object, path: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        k = shellquote.script_index([str(v) for v in value])
        if k is not None:
            yield (*path, k), str(value[k])


def command_fields(plan: Plan) -> Iterator[tuple[Loc, str]]:
    """Each field of the plan that is run as shell text, with its path."""
    for site in iter_steps(plan):
        s, p = site.step, site.path
        if isinstance(s, RunStep | SshStep):
            yield from _command(s.command, (*p, "command"))
        elif isinstance(s, MaintenanceStep):
            for name in ("enable", "disable"):
                yield from _command(getattr(s, name), (*p, name))
        elif isinstance(s, MigrateStep) and s.tool == "command":
            for name in ("up", "down", "version"):
                yield from _command(getattr(s, name), (*p, name))
    for cs in iter_check_sites(plan):
        if isinstance(cs.check, CommandCheck):
            yield from _command(cs.check.command, (*cs.path, "command"))
    if plan.maintenance is not None:
        for name in ("enable", "disable"):
            yield from _command(getattr(plan.maintenance, name), ("maintenance", name))
    for rname, router in plan.targets.routers.items():
        if isinstance(router, NginxRouter):
            yield from _command(router.reload, ("targets", "routers", rname, "reload"))


def shell_problems(plan: Plan) -> list[Problem]:
    """An error for each reference in command text that tminus will refuse to substitute."""
    out: list[Problem] = []
    seen: set[Loc] = set()
    for path, text in command_fields(plan):
        if path in seen or "${" not in text:
            continue
        seen.add(path)
        for r in shellquote.analyse(text).rejected:
            line, _col = r.line_col(text)
            where = f" (line {line} of the command)" if "\n" in text.strip() else ""
            out.append(
                Problem(
                    "error",
                    "unsafe-reference",
                    f"{r.ref} cannot be put into this command safely{where}: {r.reason}",
                    path=path,
                    hint=r.hint.replace("${v}", r.ref),
                )
            )
    return out
