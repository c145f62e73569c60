"""Operations and health: ``tminus op list|run`` and ``tminus health``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from tminus.cli._util import EXIT_BAD_INPUT, echo_json, fail, handle_errors, state_option

__all__ = ["COMMANDS"]


def _load(plan_path: str) -> Any:
    from tminus.plan.loader import load_plan
    from tminus.plan.problems import format_problems

    result = load_plan(plan_path)
    if not result.ok or result.plan is None:
        click.echo(format_problems([p for p in result.problems if p.severity == "error"]), err=True)
        sys.exit(EXIT_BAD_INPUT)
    return result.plan


@click.group()
def op() -> None:
    """Named operations of a plan (restart an import, emergency stop, …)."""


@op.command(name="list")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def op_list(plan: str, output: str) -> None:
    """List PLAN's operations with their parameters."""
    p = _load(plan)
    rows = []
    for name, o in p.operations.items():
        rows.append(
            {
                "name": name,
                "description": o.description,
                "params": {
                    k: {
                        "type": v.type,
                        "default": v.default,
                        "required": v.required,
                        "description": v.description,
                    }
                    for k, v in o.params.items()
                },
                "roles": o.roles,
                "confirm": bool(o.confirm or o.dangerous),
                "dangerous": o.dangerous,
                "emergency": o.emergency,
            }
        )
    if output == "json":
        echo_json(rows)
        return
    if not rows:
        click.echo(f"plan '{p.name}' has no operations")
    for r in rows:
        flags = [f for f in ("emergency", "dangerous") if r[f]]
        if r["confirm"] and not r["dangerous"]:
            flags.append("asks to confirm")
        head = r["name"] + (f"  [{', '.join(flags)}]" if flags else "")
        click.echo(head)
        if r["description"]:
            click.echo(f"    {r['description']}")
        for k, v in r["params"].items():
            req = (
                "required"
                if v["required"] and v["default"] is None
                else f"default {v['default']!r}"
            )
            click.echo(
                f"    --param {k}=<{v['type']}>  ({req})"
                + (f"  {v['description']}" if v["description"] else "")
            )
        if r["roles"]:
            click.echo(f"    roles: {', '.join(r['roles'])}")


def _params(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"'{v}' is not NAME=VALUE", param_hint="--param")
        k, _, val = v.partition("=")
        out[k.strip()] = val
    return out


@op.command(name="run")
@click.argument("plan", type=click.Path(dir_okay=False))
@click.argument("name")
@click.option("--param", "params", multiple=True, help="A parameter: NAME=VALUE.")
@click.option("--dry-run", is_flag=True, help="Print what would run; run nothing.")
@click.option("--yes", is_flag=True, help="Confirm a dangerous operation without a prompt.")
@click.option("--reason", default=None)
@click.option("--force-unlock", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
@click.option("--as", "operator", default=None, help="Who you are.")
@state_option
@handle_errors
def op_run(
    plan: str,
    name: str,
    params: tuple[str, ...],
    dry_run: bool,
    yes: bool,
    reason: str | None,
    force_unlock: bool,
    quiet: bool,
    operator: str | None,
    state_url: str | None,
) -> None:
    """Run operation NAME of PLAN on the durable engine."""
    from tminus.engine import operations, runner
    from tminus.plan.loader import load_plan_text
    from tminus.plan.problems import format_problems

    p = _load(plan)
    o = operations.get_operation(p, name)
    who = operator or runner.default_operator()
    given = _params(params)
    values = operations.parse_params(name, o, given)
    if not dry_run:  # a dry run runs nothing: anyone may look (it says who may run it)
        operations.check_role(p, name, o, who)
    text = operations.derived_plan(p, name, values, given=given)
    loaded = load_plan_text(text, plan)
    if loaded.plan is None:  # pragma: no cover - the derived plan is built from a valid one
        fail("the operation does not form a valid plan:\n" + format_problems(loaded.problems))
    opts = runner.RunOptions(
        state_url=state_url, operator=who, reason=reason, force_unlock=force_unlock, quiet=quiet
    )
    if dry_run:
        for line in runner.dry_run_loaded(loaded.plan, plan, opts):
            click.echo(line)
        click.echo(_who_may_run(p, name, o, who))
        return
    if o.confirm or o.dangerous:
        prompt = (
            o.confirm
            if isinstance(o.confirm, str)
            else (
                f"Run {'dangerous ' if o.dangerous else ''}operation '{name}' of '{p.name}' "
                f"in {p.environment}?"
            )
        )
        if not yes:
            if not (os.isatty(0) and os.isatty(1)):
                fail(
                    f"operation '{name}' needs confirmation and this shell is not interactive",
                    hint="run it in a terminal, or pass --yes to confirm",
                )
            if not click.confirm(prompt, default=False):
                fail("not confirmed; nothing was run")
        opts.reason = (reason + "; " if reason else "") + f"confirmed by {who}"
    _deploy_id, code, message = runner.start_loaded(loaded.plan, text, plan, opts)
    click.echo(message, err=code != 0)
    sys.exit(code)


def _who_may_run(p: Any, name: str, o: Any, who: str) -> str:
    """The dry run's last line: who may run operation ``name`` for real, and whether ``who``
    may."""
    from tminus.engine import operations
    from tminus.errors import PlanError

    if not o.roles:
        return f"anyone may run '{name}'"
    people = sorted({x for r in o.roles for x in p.roles[r].people})
    shown = f"role {', '.join(o.roles)}" + (f" ({', '.join(people)})" if people else "")
    try:
        operations.check_role(p, name, o, who)
    except PlanError:
        return f"'{name}' may be run by {shown}; {who} may not"
    return f"'{name}' may be run by {shown}; {who} may"


_LABEL = {("passed", "ok"): "PASS", ("passed", "warn"): "WARN"}


def _label(status: str, level: str) -> str:
    if status == "inconclusive":
        return "UNKNOWN"
    return _LABEL.get((status, level), "CRITICAL")


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def health(plan: str, output: str) -> None:
    """Run PLAN's health checks. Exit 0 healthy (WARN allowed), 1 CRITICAL, 3 UNKNOWN."""
    from pathlib import Path

    from tminus.engine.runner import default_operator, make_resolver

    p = _load(plan)
    if not p.health:
        fail(f"plan '{p.name}' declares no health checks", hint="add a 'health:' list of checks")
    resolver = make_resolver(p, plan, "health", default_operator(), {}, Path(".tminus"))
    rows = run_checks(p, resolver, [(None, c) for c in p.health])
    if output == "json":
        echo_json({"plan": p.name, "checks": rows})
    else:
        print_checks(rows)
    sys.exit(checks_exit_code(rows))


def run_checks(p: Any, resolver: Any, refs: list[tuple[str | None, Any]]) -> list[dict[str, Any]]:
    """Run the checks ``refs`` (shown name or None, check or ``use:`` reference) once,
    concurrently: one row each (name, PASS/WARN/CRITICAL/UNKNOWN, value, message). Shared by
    `tminus health` and `tminus check --run-check`."""
    import asyncio
    from pathlib import Path

    from tminus.engine.checking import run_check

    async def run_all() -> list[Any]:
        return list(
            await asyncio.gather(*(run_check(p, resolver, Path(".tminus"), c) for _, c in refs))
        )

    results = asyncio.run(run_all())
    return [
        {
            "name": shown or r.name,
            "status": _label(r.status, r.level),
            "value": _plain(r.value),
            "message": r.message,
        }
        for (shown, _), r in zip(refs, results, strict=True)
    ]


def print_checks(rows: list[dict[str, Any]]) -> None:
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        click.echo(f"{r['status']:<9} {r['name']:<{width}}  {r['message']}")


def checks_exit_code(rows: list[dict[str, Any]]) -> int:
    """0 healthy (WARN allowed), 1 CRITICAL, 3 UNKNOWN."""
    statuses = {r["status"] for r in rows}
    return 1 if "CRITICAL" in statuses else 3 if "UNKNOWN" in statuses else 0


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


COMMANDS: list[click.Command] = [op, health]
