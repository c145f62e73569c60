"""Commands that act on deploys: run, resume, approve, abort, rollback (the read-only ones are
in :mod:`tminus.cli.status`)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from tminus.cli._util import echo_json, handle_errors, state_option

__all__ = ["COMMANDS"]

_as_opt = click.option(
    "--as", "operator", default=None, help="Who you are (default: $TMINUS_OPERATOR or your login)."
)


def _operator(value: str | None) -> str:
    from tminus.engine.prepare import default_operator  # light: abort and rollback start fast

    return value or default_operator()


_no_server_opt = click.option(
    "--no-server",
    is_flag=True,
    help="Run it in this process even when a tminus serve of the store runs here (by default "
    "it is handed to that server, whose engine is loaded already, and followed from here).",
)


def _parse_vars(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"'{v}' is not NAME=VALUE", param_hint="--var")
        k, _, val = v.partition("=")
        out[k.strip()] = val
    return out


def _finish(code: int, message: str) -> None:
    click.echo(message, err=code != 0)
    sys.exit(code)


_output_opt = click.option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: progress on stderr, then one JSON object on stdout (state, exit code, "
    "reason and what `tminus status --output json` shows).",
)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Everything written to stdout (progress lines, and commands' output that is not
    captured) goes to stderr, so stdout carries only the final JSON object."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _drive_and_finish(
    output: str,
    state_url: str | None,
    deploy: str | None,
    go: Callable[[], tuple[str | None, int, str]],
) -> None:
    """Run ``go`` (which returns deploy id, exit code, final message) and exit with its code;
    with ``--output json``, print the outcome as one JSON object on stdout."""
    if output != "json":
        _deploy_id, code, message = go()
        _finish(code, message)
        return
    from tminus.errors import TminusError

    try:
        with _stdout_to_stderr():
            deploy_id, code, message = go()
    except TminusError as exc:  # nothing ran (or could not go on): still one JSON object
        echo_json(
            {
                "deploy_id": deploy,
                "state": None,
                "exit_code": exc.exit_code,
                "reason": str(exc),
                "message": f"error: {exc}",
            }
        )
        raise
    click.echo(message, err=True)
    echo_json(_outcome(state_url, deploy_id or deploy, code, message))
    sys.exit(code)


def _outcome(state_url: str | None, deploy_id: str | None, code: int, message: str) -> Any:
    from tminus.engine.status import deploy_status
    from tminus.store import Store

    info: dict[str, Any] = {"state": None, "reason": None}
    if deploy_id is not None:
        info = deploy_status(Store(state_url), deploy_id)
    return {
        "deploy_id": deploy_id,
        "state": info["state"],
        "exit_code": code,
        "reason": info["reason"],
        "message": message,
    } | {k: v for k, v in info.items() if k not in ("state", "reason")}


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print what would run, secrets masked; run nothing.")
@click.option("--confirm", "confirms", multiple=True, help="Confirm a manual checklist item.")
@click.option("--var", "variables", multiple=True, help="Override a variable: NAME=VALUE.")
@click.option("--reason", default=None, help="Why; shown to whoever finds the lock.")
@click.option("--force-unlock", is_flag=True, help="Take over a stale lock (recorded).")
@click.option("--quiet", "-q", is_flag=True, help="Only the final line.")
@click.option(
    "--phase",
    "phases",
    multiple=True,
    help="Run only this phase (name or 1-based number; repeatable), in plan order.",
)
@click.option(
    "--skip-checklist",
    is_flag=True,
    help="With --phase: leave out the checklist gate (recorded); approvals still apply.",
)
@click.option(
    "--outside-window",
    metavar="REASON",
    default=None,
    help="Run although now is outside the plan's window (the reason is recorded).",
)
@_output_opt
@_as_opt
@state_option
@handle_errors
def run(
    plan: str,
    dry_run: bool,
    confirms: tuple[str, ...],
    variables: tuple[str, ...],
    reason: str | None,
    force_unlock: bool,
    quiet: bool,
    phases: tuple[str, ...],
    skip_checklist: bool,
    outside_window: str | None,
    output: str,
    operator: str | None,
    state_url: str | None,
) -> None:
    """Run PLAN: checklist gate, approvals, phases, success summary."""
    from tminus.engine import runner

    opts = runner.RunOptions(
        state_url=state_url,
        operator=_operator(operator),
        confirms=confirms,
        overrides=_parse_vars(variables),
        reason=reason,
        force_unlock=force_unlock,
        quiet=quiet,
        phases=phases,
        skip_checklist=skip_checklist,
        outside_window=outside_window,
    )
    if dry_run:
        for line in runner.dry_run(plan, opts):
            click.echo(line)
        return
    _drive_and_finish(output, state_url, None, lambda: runner.start(plan, opts))


@click.command()
@click.argument("deploy")
@click.option("--retry-step", "action", flag_value="retry", help="Re-run the failed step.")
@click.option("--skip-step", "action", flag_value="skip", help="Mark the failed step skipped.")
@click.option("--rollback", "action", flag_value="rollback", help="Roll the deploy back.")
@click.option("--confirm", "confirms", multiple=True, help="Confirm a manual checklist item.")
@click.option(
    "--exclude-host",
    "exclude_hosts",
    multiple=True,
    help="Leave this host out from now on (recorded; repeatable). On a paused deploy it "
    "implies --retry-step: the step re-runs on the hosts not yet done.",
)
@click.option(
    "--retry-failed-hosts",
    is_flag=True,
    help="Run each fleet step whose max_fail tolerated failed hosts again on those hosts, "
    "within this deploy (it succeeded, is paused or is scheduled).",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --retry-failed-hosts: retry although the rollback window closed or a later "
    "deploy succeeded (recorded).",
)
@click.option("--force-unlock", is_flag=True, help="Take over a stale lock (recorded).")
@click.option("--quiet", "-q", is_flag=True)
@click.option(
    "--handover-on-sigterm",
    is_flag=True,
    hidden=True,
    help="(tminus serve's workers) on SIGTERM, pause before the next step.",
)
@_output_opt
@_as_opt
@state_option
@handle_errors
def resume(
    deploy: str,
    action: str | None,
    confirms: tuple[str, ...],
    exclude_hosts: tuple[str, ...],
    retry_failed_hosts: bool,
    force: bool,
    force_unlock: bool,
    quiet: bool,
    handover_on_sigterm: bool,
    output: str,
    operator: str | None,
    state_url: str | None,
) -> None:
    """Continue DEPLOY after a pause, an approval, a crash or a scheduled delay; or retry the
    hosts its fleet steps tolerated as failed (--retry-failed-hosts)."""
    from tminus.engine import runner

    if force and not retry_failed_hosts:
        raise click.UsageError("--force applies to --retry-failed-hosts only")
    if retry_failed_hosts and (action or confirms or exclude_hosts):
        raise click.UsageError(
            "--retry-failed-hosts goes alone (not with --retry-step, --skip-step, --rollback, "
            "--confirm or --exclude-host)"
        )
    opts = runner.RunOptions(
        state_url=state_url,
        operator=_operator(operator),
        confirms=confirms,
        force_unlock=force_unlock,
        quiet=quiet,
        exclude_hosts=exclude_hosts,
        handover_on_sigterm=handover_on_sigterm,
    )
    if retry_failed_hosts:
        _drive_and_finish(
            output,
            state_url,
            deploy,
            lambda: (deploy, *runner.retry_failed_hosts(deploy, force, opts)),
        )
        return
    _drive_and_finish(
        output, state_url, deploy, lambda: (deploy, *runner.resume(deploy, action or "", opts))
    )


@click.command()
@click.argument("deploy")
@click.option("--role", required=True)
@click.option("--as", "person", required=True, help="Who approves.")
@click.option("--comment", default=None)
@state_option
@handle_errors
def approve(
    deploy: str, role: str, person: str, comment: str | None, state_url: str | None
) -> None:
    """Record ROLE's sign-off on DEPLOY."""
    from tminus.engine import runner

    click.echo(runner.approve(deploy, role, person, comment, state_url))


@click.command()
@click.argument("deploy")
@click.option("--rollback", is_flag=True, help="Roll back before stopping.")
@_no_server_opt
@_output_opt
@_as_opt
@state_option
@handle_errors
def abort(
    deploy: str,
    rollback: bool,
    no_server: bool,
    output: str,
    operator: str | None,
    state_url: str | None,
) -> None:
    """Stop DEPLOY; it is recorded as aborted, not failed. A live runner is asked (on this
    host it is woken and stops its step at once); with none, a tminus serve running here
    stops it, else this process does."""
    person = _operator(operator)

    def go() -> tuple[str | None, int, str]:
        from tminus.engine.emergency import quick_abort

        quick = quick_abort(state_url, deploy, rollback, person, use_server=not no_server)
        if quick is not None:
            return deploy, *quick
        from tminus.engine import runner

        opts = runner.RunOptions(state_url=state_url, operator=person)
        return deploy, *runner.abort(deploy, rollback, opts)

    _drive_and_finish(output, state_url, deploy, go)


@click.command()
@click.argument("deploy")
@click.option(
    "--phase",
    "phases",
    multiple=True,
    help="Roll back only this phase (name or number; repeatable). Default: every phase.",
)
@click.option("--reason", default=None, help="Why (recorded).")
@click.option(
    "--force",
    is_flag=True,
    help="Roll back although the rollback window closed or a later deploy succeeded (recorded).",
)
@click.option("--quiet", "-q", is_flag=True)
@_no_server_opt
@_output_opt
@_as_opt
@state_option
@handle_errors
def rollback(
    deploy: str,
    phases: tuple[str, ...],
    reason: str | None,
    force: bool,
    quiet: bool,
    no_server: bool,
    output: str,
    operator: str | None,
    state_url: str | None,
) -> None:
    """Roll back DEPLOY after it succeeded (or is scheduled, or was partly rolled back):
    the recorded undo and rollback steps of its phases, newest first. A tminus serve of the
    store running here (same directory) runs it and this command follows it to its end."""
    person = _operator(operator)

    def go() -> tuple[str | None, int, str]:
        if not no_server:
            handed = _hand_off(
                state_url, deploy, _rollback_argv(deploy, phases, reason, force, quiet), person
            )
            if handed is not None:
                return deploy, *handed
        from tminus.engine import runner

        opts = runner.RunOptions(state_url=state_url, operator=person, quiet=quiet)
        return deploy, *runner.rollback(deploy, phases, reason, force, opts)

    _drive_and_finish(output, state_url, deploy, go)


def _rollback_argv(
    deploy: str, phases: tuple[str, ...], reason: str | None, force: bool, quiet: bool
) -> list[str]:
    argv = ["rollback", deploy]
    for ph in phases:
        argv += ["--phase", ph]
    if reason is not None:
        argv += ["--reason", reason]
    return argv + (["--force"] if force else []) + (["--quiet"] if quiet else [])


def _hand_off(
    state_url: str | None, deploy: str, argv: list[str], person: str
) -> tuple[int, str] | None:
    """Hand ``tminus ARGV`` to a live tminus serve here and follow it (its exit code and
    final line); None when there is none, or it did not take the run (run it here)."""
    from tminus.engine.emergency import hand_off
    from tminus.store.store import Store

    store = Store(state_url)
    try:
        return hand_off(store, deploy, argv, person, echo=click.echo)
    finally:
        store.close()


COMMANDS: list[click.Command] = [run, resume, approve, abort, rollback]
