"""After the deploy: the after-action report and the milestones' sign-offs."""

from __future__ import annotations

from pathlib import Path

import click

from tminus.cli._util import handle_errors, state_option

__all__ = ["COMMANDS"]

_BY_SUFFIX = {".md": "md", ".markdown": "md", ".html": "html", ".htm": "html", ".json": "json"}


@click.command()
@click.argument("deploy")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "json"]),
    default=None,
    help="md (tables), html (one printable file with SVG charts) or json (the data); "
    "default: from the -o file's suffix, else md.",
)
@click.option("-o", "--output-file", "output", type=click.Path(dir_okay=False), default=None)
@state_option
@handle_errors
def report(deploy: str, fmt: str | None, output: str | None, state_url: str | None) -> None:
    """The after-action report of DEPLOY: planned versus actual (Gantt chart, variance, critical
    path), downtime against the allowed downtime, approvals, confirmations and sign-offs,
    rollbacks and their causes, success metrics, the watch's series and the notifications."""
    from tminus.report import render
    from tminus.report.data import build_report
    from tminus.store import Store

    if fmt is None:
        fmt = _BY_SUFFIX.get(Path(output).suffix.lower(), "md") if output else "md"
    text = render(build_report(Store(state_url), deploy), fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"report of {deploy} written to {output} ({fmt})", err=True)


@click.command()
@click.argument("deploy")
@click.option("--milestone", required=True, help="What is signed off, e.g. day-1 or day-7.")
@click.option("--role", required=True, help="A role of the plan.")
@click.option("--as", "person", required=True, help="Who signs off (one of the role's people).")
@click.option("--comment", default=None)
@state_option
@handle_errors
def signoff(
    deploy: str,
    milestone: str,
    role: str,
    person: str,
    comment: str | None,
    state_url: str | None,
) -> None:
    """Record ROLE's sign-off of a MILESTONE of DEPLOY (a deploy that succeeded, or whose
    watch is running). Same rules as `tminus approve`: the plan's roles and people, separation
    of duties; each role signs a milestone once. `tminus report` lists the sign-offs."""
    from tminus.report.signoff import sign_off
    from tminus.store import Store

    click.echo(sign_off(Store(state_url), deploy, milestone, role, person, comment))


COMMANDS: list[click.Command] = [report, signoff]
