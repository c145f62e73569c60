"""Commands on a plan file: ``check``, ``schema`` and ``render``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tminus.cli._util import EXIT_BAD_INPUT, handle_errors

__all__ = ["COMMANDS", "check", "render", "schema"]


@click.command()
@click.argument("plans", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@handle_errors
def check(plans: tuple[str, ...], output: str, strict: bool) -> None:
    """Validate PLANS: YAML, keys, types and semantics. Exit 2 on any error."""
    import json

    from tminus.plan.loader import load_plan
    from tminus.plan.problems import format_problems, problems_json

    failed = False
    reports = []
    for path in plans:
        result = load_plan(path)
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
    if output == "json":
        click.echo(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    if failed:
        sys.exit(EXIT_BAD_INPUT)


@click.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of the plan format (for editors' YAML support)."""
    import json

    from tminus.plan.schema import plan_json_schema

    click.echo(json.dumps(plan_json_schema(), indent=2))


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to FILE.")
@handle_errors
def render(plan: str, fmt: str, output: str | None) -> None:
    """Render PLAN as the runbook (Markdown or self-contained HTML)."""
    from tminus.plan.loader import load_plan
    from tminus.plan.problems import format_problems
    from tminus.plan.render import render_html, render_markdown

    result = load_plan(plan)
    if not result.ok or result.plan is None:
        click.echo(format_problems(result.problems), err=True)
        sys.exit(EXIT_BAD_INPUT)
    text = render_markdown(result.plan, plan) if fmt == "md" else render_html(result.plan, plan)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


COMMANDS = [check, schema, render]
