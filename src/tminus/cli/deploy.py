"""Commands on deploys: run, resume, approve, abort, status, log, list, due."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from tminus.cli._util import EXIT_DONE, EXIT_WAITING, echo_json, handle_errors

__all__ = ["COMMANDS"]

_state_opt = click.option(
    "--state",
    "state_url",
    envvar="TMINUS_STATE",
    default=None,
    help="State store URL (default sqlite:///.tminus/state.db, or postgresql://…).",
)
_as_opt = click.option(
    "--as", "operator", default=None, help="Who you are (default: $TMINUS_OPERATOR or your login)."
)


def _operator(value: str | None) -> str:
    from tminus.engine.runner import default_operator

    return value or default_operator()


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
    from tminus.engine.inspect import deploy_status
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
@_state_opt
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
@_output_opt
@_as_opt
@_state_opt
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
@_state_opt
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
@_output_opt
@_as_opt
@_state_opt
@handle_errors
def abort(
    deploy: str, rollback: bool, output: str, operator: str | None, state_url: str | None
) -> None:
    """Stop DEPLOY; it is recorded as aborted, not failed."""
    from tminus.engine import runner

    opts = runner.RunOptions(state_url=state_url, operator=_operator(operator))
    _drive_and_finish(
        output, state_url, deploy, lambda: (deploy, *runner.abort(deploy, rollback, opts))
    )


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
@_output_opt
@_as_opt
@_state_opt
@handle_errors
def rollback(
    deploy: str,
    phases: tuple[str, ...],
    reason: str | None,
    force: bool,
    quiet: bool,
    output: str,
    operator: str | None,
    state_url: str | None,
) -> None:
    """Roll back DEPLOY after it succeeded (or is scheduled, or was partly rolled back):
    the recorded undo and rollback steps of its phases, newest first."""
    from tminus.engine import runner

    opts = runner.RunOptions(state_url=state_url, operator=_operator(operator), quiet=quiet)
    _drive_and_finish(
        output,
        state_url,
        deploy,
        lambda: (deploy, *runner.rollback(deploy, phases, reason, force, opts)),
    )


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def _ts(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S %Z}" if value is not None else "-"


@click.command()
@click.argument("deploy", required=False)
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@_state_opt
@handle_errors
def status(deploy: str | None, output: str, state_url: str | None) -> None:
    """State, current step, estimate against actual per phase, maintenance downtime."""
    from tminus.engine.inspect import deploy_status
    from tminus.store import Store

    store = Store(state_url)
    if deploy is None:
        latest = store.latest_deploy()
        if latest is None:
            click.echo("no deploys yet")
            return
        deploy = str(latest["id"])
    info = deploy_status(store, deploy)
    if output == "json":
        echo_json(info)
        return
    shown = info["state"]
    if shown != info["stored_state"]:
        shown += f" (stored: {info['stored_state']})"
    click.echo(f"deploy {info['id']}  plan {info['plan']} ({info['environment']})  state: {shown}")
    runner = info["runner"]
    if info["state"] == "crashed" and runner is not None:
        click.echo(
            f"  the runner (pid {runner['pid']} on {runner['host']}) is dead: {runner['why']}"
        )
        for f in info["in_flight"]:
            click.echo(
                f"  in flight when it died: {f['title']} [{f['key']}] since {_ts(f['started_at'])}"
            )
        if not info["in_flight"]:
            click.echo("  in flight when it died: no step")
        click.echo(f"  continue with: tminus resume {info['id']}  (or: tminus abort {info['id']})")
    elif runner is not None and runner["alive"]:
        beat = runner["heartbeat_age_s"]
        click.echo(
            f"  runner: pid {runner['pid']} on {runner['host']}"
            + (f", heartbeat {beat:.1f} s ago" if beat is not None else "")
        )
    if info["reason"]:
        click.echo(f"  {info['reason']}")
    click.echo(
        f"  started by {info['started_by']} at {_ts(info['created_at'])}"
        + (f", ended {_ts(info['finished_at'])}" if info["finished_at"] else "")
    )
    if info["current"]:
        click.echo(f"  current: {info['current']}")
    click.echo(f"  {'phase':<32} {'state':<12} {'estimate':>9} {'actual':>9}")
    for ph in info["phases"]:
        click.echo(
            f"  {ph['name'][:32]:<32} {ph['state']:<12} {_fmt_s(ph['estimate_s']):>9} "
            f"{_fmt_s(ph['actual_s']):>9}"
        )
    m = info["maintenance"]
    click.echo(
        f"  maintenance downtime: {_fmt_s(m['total_s'])}" + (" (ON NOW)" if m["on_now"] else "")
    )
    _host_table(info["fleet"])
    for f in info.get("failed_hosts") or []:
        click.echo(f"  host {f['host']} FAILED in '{f['title']}' (tolerated by max_fail)")
    if info["due_at"] and info["state"] == "scheduled":
        click.echo(f"  due at {_ts(info['due_at'])}")
    for m in info.get("success_metrics") or []:
        click.echo(f"  success metric {m['name']}: {_metric_line(m)}")


def _metric_line(m: dict[str, Any]) -> str:
    target = f" (target {m['target']})" if m.get("target") else ""
    if m["state"] == "measured":
        late = m.get("late_s")
        when = f" at {m['measured_at'][:19].replace('T', ' ')}" if m.get("measured_at") else ""
        return f"{m['status']}{when}: {m['message']}{target}" + (
            f", {late:.0f} s after it was due" if late and late >= 1 else ""
        )
    if m["state"] in ("pending", "cancelled"):
        return f"{m['state']}, due at {_ts(m['due_at'])}{target}"
    return f"{m['state']}{target}"


def _host_table(fleet: dict[str, Any]) -> None:
    """Per host, its status in each ssh/upload/release step (numbered columns)."""
    from tminus.steps._fleet import natural_key

    hosts, cols = fleet["hosts"], fleet["steps"]
    if not hosts:
        return
    width = max(8, *(len(h) for h in hosts)) + 2
    click.echo(f"  {'host':<{width}}" + "".join(f"{n:<10}" for n in range(1, len(cols) + 1)))
    for h in sorted(hosts, key=natural_key):
        row = hosts[h]
        cells = [row.get(c["key"], "-") for c in cols]
        note = "  (excluded by " + fleet["excluded"][h] + ")" if h in fleet["excluded"] else ""
        click.echo(f"  {h:<{width}}" + "".join(f"{c:<10}" for c in cells) + note)
    for n, c in enumerate(cols, 1):
        click.echo(f"  {n}: {c['title']} [{c['kind']}, {c['key']}]")


@click.command()
@click.argument("deploy")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@_state_opt
@handle_errors
def log(deploy: str, output: str, state_url: str | None) -> None:
    """Print DEPLOY's event log."""
    from tminus.store import Store

    store = Store(state_url)
    store.deploy(deploy)  # NotFound (exit 2) for an unknown id
    events = store.events(deploy)
    if output == "json":
        echo_json([{k: v for k, v in e.items() if k != "deploy_id"} for e in events])
        return
    for e in events:
        key = f" [{e['key']}]" if e["key"] else ""
        msg = f" {e['message']}" if e["message"] else ""
        click.echo(f"{e['ts']:%Y-%m-%d %H:%M:%S} {e['type']}{key}{msg}")


@click.command(name="list")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@_state_opt
@handle_errors
def list_(output: str, state_url: str | None) -> None:
    """List deploys, newest first."""
    from tminus.engine.liveness import shown_state
    from tminus.store import Store

    rows = Store(state_url).list_deploys()
    if output == "json":
        echo_json([_brief(r) | {"state": shown_state(r), "stored_state": r["state"]} for r in rows])
        return
    for r in rows:
        click.echo(
            f"{r['id']:<30} {shown_state(r):<22} {r['environment']:<12} "
            f"{r['created_at']:%Y-%m-%d %H:%M} {r['started_by']}"
        )


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    return {
        k: r[k]
        for k in (
            "id",
            "plan_name",
            "environment",
            "state",
            "reason",
            "started_by",
            "created_at",
            "finished_at",
            "due_at",
        )
    }


@click.command()
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@_state_opt
@handle_errors
def due(output: str, state_url: str | None) -> None:
    """List scheduled work (delayed phases, success metrics with `after:`) and whether it
    is due; `tminus resume DEPLOY` does what is due.

    \b
    Exit codes, for cron: 0 nothing is due, 3 something is due (resume it),
    2 bad input.
    """
    from tminus.engine.success import CANCELLING_STATES, pending_metrics
    from tminus.plan.loader import load_plan_text
    from tminus.store import Store
    from tminus.store.store import now

    store = Store(state_url)
    deploys = store.list_deploys(limit=1000)
    t = now()
    items = [
        _brief(r) | {"what": "phase", "is_due": r["due_at"] is not None and r["due_at"] <= t}
        for r in deploys
        if r["state"] == "scheduled"
    ]
    for r in deploys:  # success metrics with `after:` (cheap test first: the plan's text)
        text = r.get("plan_text") or ""
        if r["state"] in CANCELLING_STATES or "success_metrics" not in text or "after" not in text:
            continue
        plan = load_plan_text(text, r["plan_path"], semantic=False).plan
        for m in pending_metrics(plan, store.events(r["id"]), r["state"]):
            items.append(
                _brief(r)
                | {
                    "what": "success_metric",
                    "metric": m["name"],
                    "due_at": m["due_at"],
                    "is_due": m["is_due"],
                    "reason": f"success metric '{m['name']}'",
                }
            )
    items.sort(key=lambda i: (i["due_at"] is None, i["due_at"] or t))
    code = EXIT_WAITING if any(i["is_due"] for i in items) else EXIT_DONE
    if output == "json":
        echo_json(items)
        sys.exit(code)
    if not items:
        click.echo("nothing scheduled")
    for i in items:
        flag = "DUE" if i["is_due"] else "not yet"
        click.echo(f"{i['id']:<30} {flag:<8} due {_ts(i['due_at'])}  {i['reason']}")
    sys.exit(code)


COMMANDS: list[click.Command] = [run, resume, approve, abort, rollback, status, log, list_, due]
