"""Read-only commands on deploys: status, log, list, due."""

from __future__ import annotations

import sys
from typing import Any

import click

from tminus.cli._util import EXIT_DONE, EXIT_WAITING, echo_json, handle_errors, state_option

__all__ = ["COMMANDS"]


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
@state_option
@handle_errors
def status(deploy: str | None, output: str, state_url: str | None) -> None:
    """State, current step, estimate against actual per phase, maintenance downtime."""
    from tminus.engine.status import deploy_status
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
    if info["countdown"]:
        click.echo(f"  countdown: {info['countdown']}")
    sent = info["notifications"]
    if sent["counts"]:
        parts = [f"{n} {state}" for state, n in sorted(sent["counts"].items())]
        why = f" ({sent['last_failure']})" if sent["last_failure"] else ""
        click.echo(f"  notifications: {', '.join(parts)}{why}")
    if info["timers"]:
        nxt = info["timers"][0]
        click.echo(
            f"  timers: {len(info['timers'])} pending for tminus serve; next {nxt['key']} "
            f"at {_ts(nxt['due_at'])}"
        )
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
    from tminus.hosts.fleet import natural_key

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
@state_option
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
@state_option
@handle_errors
def list_(output: str, state_url: str | None) -> None:
    """List deploys, newest first."""
    from tminus.engine.liveness import shown_state
    from tminus.store import Store

    store = Store(state_url)
    rows = store.list_deploys()
    counts = {r["id"]: _countdown(store, r) for r in rows}
    if output == "json":
        echo_json(
            [
                _brief(r)
                | {
                    "state": shown_state(r),
                    "stored_state": r["state"],
                    "countdown": counts[r["id"]],
                }
                for r in rows
            ]
        )
        return
    for r in rows:
        click.echo(
            f"{r['id']:<30} {shown_state(r):<22} {r['environment']:<12} "
            f"{r['created_at']:%Y-%m-%d %H:%M} {r['started_by']}"
            + (f"  {counts[r['id']]}" if counts[r["id"]] else "")
        )


def _countdown(store: Any, r: dict[str, Any]) -> str | None:
    """A deploy registered with `tminus schedule` and not started: its countdown."""
    if r["state"] != "scheduled" or not str(r["reason"] or "").endswith("(T-0)"):
        return None
    from tminus.engine.scheduling import countdown
    from tminus.plan.loader import load_plan_text

    plan = load_plan_text(r["plan_text"], r["plan_path"], semantic=False).plan
    return countdown(r, plan, store) if plan is not None else None


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
@state_option
@handle_errors
def due(output: str, state_url: str | None) -> None:
    """List scheduled work (delayed phases, success metrics with `after:`) and whether it
    is due; `tminus resume DEPLOY` does what is due.

    \b
    Exit codes, for cron: 0 nothing is due, 3 something is due (resume it),
    2 bad input.
    """
    from tminus.clock import now
    from tminus.engine.success import CANCELLING_STATES, pending_metrics
    from tminus.plan.loader import load_plan_text
    from tminus.store import Store

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


COMMANDS: list[click.Command] = [status, log, list_, due]
