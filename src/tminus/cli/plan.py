"""Commands on a plan file: ``check``, ``schema`` and ``render``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from tminus.cli._util import EXIT_BAD_INPUT, fail, handle_errors

__all__ = ["COMMANDS", "check", "render", "schema"]


@click.command()
@click.argument("plans", nargs=-1, required=True)  # each one read by load_plan: error[io]
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option(
    "--run-check",
    "run_checks",
    multiple=True,
    metavar="NAME",
    help="Then run this check once against the live system: a key of the plan's `checks:`, "
    "or `checklist` (its automated items) or `health` (repeatable; one PLAN).",
)
@click.option("--var", "variables", multiple=True, help="With --run-check: NAME=VALUE.")
@handle_errors
def check(
    plans: tuple[str, ...],
    output: str,
    strict: bool,
    run_checks: tuple[str, ...],
    variables: tuple[str, ...],
) -> None:
    """Validate PLANS: YAML, keys, types and semantics. Exit 2 on any error.

    \b
    With --run-check NAME: also run those checks once, variables resolved as in a dry run
    (--var allowed), and print PASS/WARN/CRITICAL/UNKNOWN like `tminus health`;
    exit 0 (WARN allowed), 1 CRITICAL, 3 UNKNOWN.
    """
    import json

    if (run_checks or variables) and len(plans) != 1:
        fail("--run-check and --var apply to one PLAN", hint="tminus check PLAN --run-check NAME")
    if variables and not run_checks:
        fail("--var applies with --run-check", hint="tminus check PLAN --run-check NAME --var K=V")

    from tminus.plan.loader import load_plan
    from tminus.plan.problems import format_problems, problems_json

    failed = False
    reports = []
    loaded: dict[str, Any] = {}
    for path in plans:
        result = load_plan(path)
        loaded[path] = result.plan
        errors = [p for p in result.problems if p.severity == "error"]
        warnings = [p for p in result.problems if p.severity == "warning"]
        bad = bool(errors) or result.plan is None or (strict and bool(warnings))
        failed |= bad
        if output == "json":
            reports.append(json.loads(problems_json(result.problems, ok=not bad)) | {"file": path})
            continue
        if result.problems:
            click.echo(format_problems(result.problems), err=bad)
        if not bad:
            assert result.plan is not None
            p = result.plan
            click.echo(
                f"{path}: ok — plan '{p.name}' ({p.environment}), {len(p.phases)} phases, "
                f"{sum(len(ph.steps) for ph in p.phases)} steps"
                + (f", {len(warnings)} warning(s)" if warnings else "")
            )
        else:
            click.echo(f"{path}: {len(errors)} error(s), {len(warnings)} warning(s)", err=True)
    if not failed:
        _warn_exposed(loaded, variables)
    if failed or not run_checks:
        if output == "json":
            click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
        if failed:
            sys.exit(EXIT_BAD_INPUT)
        return
    assert result.plan is not None
    rows = _run_checks(result.plan, plans[0], run_checks, variables)
    from tminus.cli.ops import checks_exit_code, print_checks

    if output == "json":
        click.echo(json.dumps(reports[0] | {"checks": rows}, indent=2, default=str))
    else:
        print_checks(rows)
    sys.exit(checks_exit_code(rows))


def _warn_exposed(plans: dict[str, Any], variables: tuple[str, ...]) -> None:
    """On stderr: the state directory and the plans' backup directories that exist and are
    open to other users (``tminus run`` warns too; see docs/data-safety.md)."""
    # Not tminus.engine.runner nor tminus.store: `check` stays free of SQLAlchemy and the engine.
    from tminus.cli.deploy import _parse_vars
    from tminus.engine.prepare import (
        default_operator,
        exposure_warnings,
        make_resolver,
        state_dir_of,
    )
    from tminus.files import default_state_url

    state_dir = state_dir_of(default_state_url())
    seen: set[str] = set()
    for path, plan in plans.items():
        if plan is None:
            continue
        try:
            r = make_resolver(
                plan, path, "<deploy-id>", default_operator(), _parse_vars(variables), state_dir
            )
        except Exception:  # a variable not set here: the literal directories are still checked
            r = None
        for w in exposure_warnings(plan, r, state_dir):
            if w not in seen:
                seen.add(w)
                click.echo(f"warning: {w}", err=True)


def _run_checks(
    plan: Any, plan_path: str, names: tuple[str, ...], variables: tuple[str, ...]
) -> list[dict[str, Any]]:
    """``--run-check``: the checks NAMES stand for, run once, resolved like a dry run."""
    from tminus.cli.deploy import _parse_vars
    from tminus.cli.ops import run_checks
    from tminus.engine.prepare import default_operator, make_resolver
    from tminus.plan.checks import CheckUse
    from tminus.plan.problems import did_you_mean

    refs: list[tuple[str | None, Any]] = []
    for name in dict.fromkeys(names):
        if name in plan.checks:
            refs.append((name, CheckUse(use=name)))
        elif name == "checklist":
            items = [(c.item, c.check) for c in plan.checklist if c.check is not None]
            if not items:
                fail(f"plan '{plan.name}' has no automated checklist items")
            refs += items
        elif name == "health":
            if not plan.health:
                fail(f"plan '{plan.name}' declares no health checks")
            refs += [(None, c) for c in plan.health]
        else:
            known = [*plan.checks, "checklist", "health"]
            fail(
                f"--run-check: no check '{name}' in plan '{plan.name}'",
                hint=did_you_mean(name, known) or "checks: " + ", ".join(known),
            )
    resolver = make_resolver(
        plan, plan_path, "<deploy-id>", default_operator(), _parse_vars(variables), Path(".tminus")
    )
    resolver.artifacts = lambda step, key: f"<artifact {step}.{key}>"
    return run_checks(plan, resolver, refs)


@click.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of the plan format (for editors' YAML support)."""
    import json

    from tminus.plan.schema import plan_json_schema

    click.echo(json.dumps(plan_json_schema(), indent=2))


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["md", "html", "pdf"]), default="md", show_default=True
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE.")
@click.option(
    "--unresolved",
    is_flag=True,
    help="Print ${...} references as written instead of resolving them like a dry run.",
)
@click.option("--var", "variables", multiple=True, help="NAME=VALUE for this rendering.")
@click.option(
    "--start",
    metavar="ISO",
    help="The window's start for this rendering (e.g. 2026-03-01T02:00), when the plan "
    "says TBD or another time: every T-mark gets its wall-clock time.",
)
@click.option("--tz", metavar="ZONE", help="A second time zone shown beside the window's.")
@click.option("--compact", is_flag=True, help="About a third of the length: for the bridge.")
@handle_errors
def render(
    plan: str,
    fmt: str,
    output: str | None,
    unresolved: bool,
    variables: tuple[str, ...],
    start: str | None,
    tz: str | None,
    compact: bool,
) -> None:
    """Render PLAN as the runbook (Markdown, self-contained HTML, or PDF).

    \b
    Values are resolved as `tminus run --dry-run` resolves them (--var NAME=VALUE used),
    secrets shown as ***; a value that only exists during a deploy shows as <name>.
    --format pdf prints the HTML with headless Chromium (needs -o FILE).
    """
    from datetime import datetime

    from tminus.cli.deploy import _parse_vars
    from tminus.plan.loader import load_plan
    from tminus.plan.problems import format_problems
    from tminus.plan.render import RenderOptions, build_runbook

    if fmt == "pdf" and not output:
        fail("--format pdf writes a file", hint="tminus render PLAN --format pdf -o runbook.pdf")
    if unresolved and variables:
        fail("--var has no effect with --unresolved", hint="drop one of them")
    when = None
    if start:
        try:
            when = datetime.fromisoformat(start)
        except ValueError:
            fail(f"--start {start!r} is not an ISO time", hint="e.g. --start 2026-03-01T02:00")
    result = load_plan(plan)
    if not result.ok or result.plan is None:
        click.echo(format_problems(result.problems), err=True)
        sys.exit(EXIT_BAD_INPUT)
    values = None
    if not unresolved:
        from tminus.engine.prepare import default_operator
        from tminus.plan._runbook_values import RunbookValues

        try:
            values = RunbookValues(
                result.plan, plan, _parse_vars(variables), operator=default_operator()
            )
        except ValueError as exc:
            fail(str(exc), hint="declare it under 'variables:' in the plan")
    options = RenderOptions(values=values, start=when, tz=tz, compact=compact)
    try:
        runbook = build_runbook(result.plan, plan, options)
    except ValueError as exc:
        fail(str(exc), hint="a zone name such as Europe/Paris or America/New_York")
    if fmt == "md":
        from tminus.plan._render_md import to_markdown

        text = to_markdown(runbook)
    else:
        from tminus.plan._render_html import to_html

        text = to_html(runbook)
    if fmt == "pdf":
        from tminus.plan._render_pdf import PdfError, html_to_pdf

        assert output is not None
        try:
            data = html_to_pdf(text)
        except PdfError as exc:
            fail(str(exc))
        Path(output).write_bytes(data)
        click.echo(f"wrote {output}", err=True)
    elif output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


COMMANDS = [check, schema, render]
