"""The always-on commands: serve, schedule, cancel, reschedule, watch."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from tminus.cli._util import EXIT_BAD_INPUT, echo_json, fail, handle_errors, state_option
from tminus.cli.deploy import _as_opt, _operator

__all__ = ["COMMANDS"]


@click.command()
@click.option(
    "--bind",
    default="127.0.0.1:8470",
    show_default=True,
    help="HOST:PORT of the dashboard, the API, /status, /healthz and /metrics; 'off' for none.",
)
@click.option(
    "--grace",
    default=60.0,
    show_default=True,
    help="On SIGTERM, seconds the deploys' steps in flight get to finish (then they pause).",
)
@click.option(
    "--trusted-header",
    default=None,
    metavar="NAME",
    help="Take the person from this request header, set by an authenticating proxy in front "
    "(oauth2-proxy: X-Forwarded-User); off by default. Only behind such a proxy.",
)
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="The dashboard's address as its users reach it (https://deploy.example.com): "
    "notifications link to the deploy's page there.",
)
@state_option
@handle_errors
def serve(
    bind: str, grace: float, trusted_header: str | None, url: str | None, state_url: str | None
) -> None:
    """Run the always-on part: start scheduled deploys at T-0, run delayed phases and success
    metrics when due, record notices, run the watch, and continue a deploy as soon as its
    approval or confirmation is recorded; serve the dashboard and the API. Stops cleanly on
    SIGTERM (docs/serve.md)."""
    import re

    from tminus.serve.server import serve as run_server

    if trusted_header is not None and not re.fullmatch(r"[A-Za-z0-9-]{1,100}", trusted_header):
        fail(
            f"--trusted-header: not an HTTP header name: {trusted_header!r}",
            EXIT_BAD_INPUT,
            hint="letters, digits and '-', e.g. X-Forwarded-User",
        )
    if url is not None and not url.startswith(("http://", "https://")):
        fail(f"--url: not an http(s) address: {url}", EXIT_BAD_INPUT, hint="--url https://…")
    if trusted_header is not None and bind != "off" and not bind.startswith(("127.", "[::1]")):
        click.echo(
            f"warning: --trusted-header {trusted_header} with --bind {bind}: anyone who can "
            "reach this address can name themselves in that header; bind to 127.0.0.1 behind "
            "the proxy",
            err=True,
        )
    try:
        code = run_server(
            state_url,
            None if bind == "off" else bind,
            grace,
            trusted_header=trusted_header,
            url=url,
        )
    except OSError as exc:
        fail(str(exc), EXIT_BAD_INPUT, hint="choose another --bind HOST:PORT, or --bind off")
    sys.exit(code)


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("--at", "at", default=None, help="T-0: ISO 8601 or +2h (default: window.start).")
@click.option("--var", "variables", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("--confirm", "confirms", multiple=True, help="Confirm a manual checklist item now.")
@click.option("--reason", default=None, help="Why (recorded).")
@click.option(
    "--outside-window", default=None, metavar="REASON", help="T-0 outside the window (recorded)."
)
@_as_opt
@state_option
@handle_errors
def schedule(
    plan: str,
    at: str | None,
    variables: tuple[str, ...],
    confirms: tuple[str, ...],
    reason: str | None,
    outside_window: str | None,
    operator: str | None,
    state_url: str | None,
) -> None:
    """Register a deploy of PLAN to start at T-0 (tminus serve starts it; notices before the
    window fire from it). Approve and confirm before T-0; see the countdown in `tminus list`."""
    from tminus.cli.deploy import _parse_vars
    from tminus.engine.launch import RunOptions
    from tminus.engine.scheduling import schedule as do_schedule

    opts = RunOptions(
        state_url=state_url,
        operator=_operator(operator),
        confirms=confirms,
        overrides=_parse_vars(variables),
        reason=reason,
        outside_window=outside_window,
    )
    _deploy_id, message = do_schedule(plan, at, opts)
    click.echo(message)


@click.command()
@click.argument("deploy")
@click.option("--reason", default=None, help="Why (recorded).")
@_as_opt
@state_option
@handle_errors
def cancel(deploy: str, reason: str | None, operator: str | None, state_url: str | None) -> None:
    """Cancel a scheduled DEPLOY that has not started (recorded; its timers are cancelled)."""
    from tminus.engine.launch import RunOptions
    from tminus.engine.scheduling import cancel as do_cancel

    click.echo(
        do_cancel(deploy, reason, RunOptions(state_url=state_url, operator=_operator(operator)))
    )


@click.command()
@click.argument("deploy")
@click.option("--at", "at", required=True, help="The new T-0: ISO 8601 or +2h.")
@click.option(
    "--outside-window", default=None, metavar="REASON", help="T-0 outside the window (recorded)."
)
@_as_opt
@state_option
@handle_errors
def reschedule(
    deploy: str, at: str, outside_window: str | None, operator: str | None, state_url: str | None
) -> None:
    """Move the T-0 of a scheduled DEPLOY that has not started (recorded; notices replanned)."""
    from tminus.engine.launch import RunOptions
    from tminus.engine.scheduling import reschedule as do_reschedule

    opts = RunOptions(
        state_url=state_url, operator=_operator(operator), outside_window=outside_window
    )
    click.echo(do_reschedule(deploy, at, opts))


def _cell(row: dict[str, Any]) -> str:
    mark = {"ok": "ok", "warn": "WARN", "critical": "CRIT", "inconclusive": "?"}.get(
        row["status"], row["status"]
    )
    value = row.get("value")
    return f"{mark} {value}" if value is not None else mark


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """Checks down, measurement times across (the newest 8)."""
    times = sorted({r["at"] for r in rows})[-8:]
    checks = list(dict.fromkeys(r["check"] for r in rows))
    by = {(r["check"], r["at"]): r for r in rows}
    width = max([len(c) for c in checks] + [5])
    head = " " * width + "  " + "  ".join(f"{t[5:16]:>12}" for t in times)
    lines = [head]
    for c in checks:
        cells = [_cell(by[(c, t)]) if (c, t) in by else "" for t in times]
        lines.append(f"{c:<{width}}  " + "  ".join(f"{x[:12]:>12}" for x in cells))
    return lines


@click.command()
@click.argument("deploy")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@click.option("--follow", "-f", is_flag=True, help="Refresh every 2 s until the watch ends.")
@click.option("--stop", is_flag=True, help="End the watch now (recorded).")
@_as_opt
@state_option
@handle_errors
def watch(
    deploy: str,
    output: str,
    follow: bool,
    stop: bool,
    operator: str | None,
    state_url: str | None,
) -> None:
    """The post-deployment watch of DEPLOY: its checks over time, WARN and CRITICAL marked;
    the measurements still planned; --stop ends it."""
    from tminus.serve.watch import watch_rows
    from tminus.store import Store

    store = Store(state_url)
    store.deploy(deploy)  # a clear error for an unknown deploy
    if stop:
        who = _operator(operator)
        n = store.cancel_timers(deploy, f"watch stopped by {who}", kinds=("watch",))
        store.event(deploy, "watch.stopped", f"watch stopped by {who}", data={"by": who})
        click.echo(f"deploy {deploy}: watch stopped by {who} ({n} measurement(s) cancelled)")
        return
    while True:
        events = store.events(deploy)
        rows = watch_rows(events)
        planned = [x for x in store.timers(deploy, kinds=("watch",)) if x["state"] == "pending"]
        ended = any(e["type"] in ("watch.ended", "watch.stopped") for e in events)
        if output == "json":
            echo_json(
                {
                    "deploy": deploy,
                    "measurements": rows,
                    "next": [{"key": x["key"], "due_at": x["due_at"]} for x in planned],
                    "ended": ended,
                }
            )
            return
        if follow:
            click.clear()
        click.echo(f"watch of {deploy}: {len(rows)} measurement(s)" + (" (ended)" if ended else ""))
        if rows:
            for line in _table(rows):
                click.echo(line)
        for x in planned[:3]:
            click.echo(f"next: {x['key']} at {x['due_at']:%Y-%m-%d %H:%M:%S %Z}")
        if not planned and not ended and not rows:
            click.echo("no watch planned (a watch starts when the deploy succeeds)")
        if not follow or ended:
            return
        time.sleep(2)


@click.group()
def plans() -> None:
    """The plans `tminus serve` knows: its API and dashboard start deploys of these."""


@plans.command(name="register")
@click.argument("plan", type=click.Path(dir_okay=False))
@_as_opt
@state_option
@handle_errors
def plans_register(plan: str, operator: str | None, state_url: str | None) -> None:
    """Check PLAN and register it (by its absolute path) under its name and environment."""
    from tminus.serve.plans import register_path
    from tminus.store import Store

    reg = register_path(Store(state_url), plan, _operator(operator))
    click.echo(f"plan {reg.name} ({reg.environment}) registered: {reg.path}")


@plans.command(name="list")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@state_option
@handle_errors
def plans_list(output: str, state_url: str | None) -> None:
    """The registered plans."""
    from tminus.store import Store

    rows = Store(state_url).registered_plans()
    if output == "json":
        echo_json(rows)
        return
    if not rows:
        click.echo("no plans registered (tminus plans register PLAN)")
    for r in rows:
        click.echo(
            f"{r['name']:<24} {r['environment']:<12} {r['path']}  "
            f"(by {r['registered_by']}, {r['registered_at']:%Y-%m-%d %H:%M})"
        )


COMMANDS = [serve, schedule, cancel, reschedule, watch, plans]
