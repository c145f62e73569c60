"""``tminus hosts``: the resolved hosts of an Ansible inventory and/or a plan's targets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from tminus.cli._util import EXIT_BAD_INPUT, echo_json, fail, handle_errors

__all__ = ["COMMANDS"]


def _load_plan(path: str) -> Any:
    from tminus.plan.loader import load_plan
    from tminus.plan.problems import format_problems

    result = load_plan(path)
    if not result.ok or result.plan is None:
        click.echo(format_problems([p for p in result.problems if p.severity == "error"]), err=True)
        sys.exit(EXIT_BAD_INPUT)
    return result.plan


def _descendants(children: dict[str, list[str]], group: str) -> set[str]:
    out, todo = {group}, [group]
    while todo:
        for ch in children.get(todo.pop(), []):
            if ch not in out:
                out.add(ch)
                todo.append(ch)
    return out


@click.command()
@click.option("-i", "--inventory", "inventory", default=None, help="An Ansible inventory file.")
@click.argument("args", nargs=-1, metavar="[PLAN] [GROUP]")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@handle_errors
def hosts(inventory: str | None, args: tuple[str, ...], output: str) -> None:
    """List hosts with their connection settings, like `ansible-inventory --list`.

    \b
    Sources: -i INVENTORY (INI or YAML, with group_vars/ and host_vars/ beside it) and/or
    PLAN (its targets.inventory, relative to the plan's directory, merged with its
    targets.hosts and targets.groups; the plan wins). -i replaces the plan's inventory.
    GROUP (or a host name) limits the listing.
    """
    from tminus.hosts.inventory import resolve

    if len(args) > 2:
        fail("too many arguments", hint="tminus hosts [-i INVENTORY] [PLAN] [GROUP]")
    plan_path: str | None = None
    group: str | None = None
    if len(args) == 2:
        plan_path, group = args
    elif len(args) == 1:
        if inventory is None or Path(args[0]).is_file():
            plan_path = args[0]
        else:
            group = args[0]
    if plan_path is None and inventory is None:
        fail("nothing to list", hint="give -i INVENTORY, a PLAN, or both")
    targets = None
    inv_path: str | Path | None = inventory
    if plan_path is not None:
        plan = _load_plan(plan_path)
        targets = plan.targets
        if inv_path is None and targets.inventory:
            inv_path = Path(plan_path).parent / targets.inventory
    inv = resolve(inv_path, targets)
    for w in inv.warnings:
        click.echo(f"warning: {w}", err=True)
    selected = inv.select(group) if group else list(inv.hosts.values())
    names = [h.name for h in sorted(selected, key=lambda h: h.name)]
    if output == "json":
        data = inv.to_ansible(only=names)
        if group and group in inv.groups:
            keep = _descendants(inv.children, group)
            data = {k: v for k, v in data.items() if k == "_meta" or k in keep}
        echo_json(data)
        return
    if not names:
        click.echo("no hosts")
        return
    rows = [("HOST", "ADDRESS", "PORT", "USER", "BECOME", "KEY", "GROUPS")]
    for n in names:
        h = inv.hosts[n]
        become = "" if not h.become else ("root" if h.become is True else str(h.become))
        rows.append(
            (
                n,
                "local" if h.local else h.address,
                "" if h.local else str(h.port),
                h.user or "",
                become,
                h.identity_file or "",
                ",".join(g for g in h.groups if g != "all"),
            )
        )
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


COMMANDS = [hosts]
