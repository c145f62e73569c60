"""``tminus backups list|verify|prune``: the backups deploys made, on disk."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tminus.cli._util import echo_json, fail, handle_errors, state_option

__all__ = ["COMMANDS"]

_dir_opt = click.option(
    "--dir",
    "backup_dir",
    type=click.Path(file_okay=False),
    default=".tminus/backups",
    show_default=True,
    help="Where the backups are (a backup step's `dest`).",
)


def _scan(root: Path) -> list[tuple[Path, Any]]:
    from tminus.backups.base import BackupError, Manifest

    out: list[tuple[Path, Any]] = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not (d / "manifest.json").is_file():
            continue
        try:
            out.append((d, Manifest.load(d)))
        except BackupError as exc:
            out.append((d, exc))
    return out


def _recorded(state_url: str | None, ended_too: bool) -> dict[str, list[str]]:
    """backup directory (resolved) → the deploys that recorded it (a backup step's
    artifacts, wherever its ``dest`` put it); only deploys that have not ended unless
    ``ended_too``."""
    from tminus.states import TERMINAL
    from tminus.store import Store

    store = Store(state_url)
    out: dict[str, list[str]] = {}
    for d in store.list_deploys(limit=10000):
        if d["state"] in TERMINAL and not ended_too:
            continue
        for row in store.step_rows(d["id"]).values():
            arts = row.get("artifacts")
            if isinstance(arts, dict) and arts.get("backup_id") and arts.get("dir"):
                holders = out.setdefault(str(Path(arts["dir"]).resolve()), [])
                if str(d["id"]) not in holders:
                    holders.append(str(d["id"]))
    return out


def _in_use(state_url: str | None) -> dict[str, list[str]]:
    """backup directory → deploys that have not ended and recorded it (their rollback may
    restore it)."""
    return _recorded(state_url, ended_too=False)


def _all_backups(root: Path, state_url: str | None) -> list[tuple[Path, Any]]:
    """The backups in ``root`` and, once each, those deploys recorded elsewhere (a backup
    step's custom ``dest``) that are still on disk; oldest first."""
    from tminus.backups.base import BackupError, Manifest

    found = _scan(root)
    seen = {str(d.resolve()) for d, _ in found}
    for path in _recorded(state_url, ended_too=True):
        d = Path(path)
        if path in seen or not (d / "manifest.json").is_file():
            continue
        seen.add(path)
        try:
            found.append((d, Manifest.load(d)))
        except BackupError as exc:
            found.append((d, exc))
    return sorted(found, key=lambda x: (getattr(x[1], "created_at", ""), x[0].name))


@click.group()
def backups() -> None:
    """Backups made by `backup` steps: list, verify, prune, restore."""


@backups.command(name="list")
@_dir_opt
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@state_option
@handle_errors
def list_(backup_dir: str, output: str, state_url: str | None) -> None:
    """List backups, newest last, with the deploys still relying on them: those in --dir and
    those deploys recorded elsewhere (a backup step's custom `dest`)."""
    used = _in_use(state_url)
    rows: list[dict[str, Any]] = []
    for d, m in _all_backups(Path(backup_dir), state_url):
        if isinstance(m, Exception):
            rows.append({"id": d.name, "dir": str(d), "error": str(m)})
            continue
        rows.append(
            {
                "id": m.id,
                "kind": m.kind,
                "target": m.target,
                "created_at": m.created_at,
                "bytes": m.totals.get("bytes", 0),
                "tables": len(m.tables),
                "files": len(m.contents) or len(m.files),
                "rows": sum(t.rows for t in m.tables),
                "in_use_by": used.get(str(d.resolve()), []),
                "dir": str(d),
            }
        )
    if output == "json":
        echo_json(rows)
        return
    if not rows:
        click.echo(f"no backups in {backup_dir}")
    for r in rows:
        if "error" in r:
            click.echo(f"{r['id']:<40} UNREADABLE: {r['error']}")
            continue
        what = f"{r['tables']} tables, {r['rows']} rows" if r["tables"] else f"{r['files']} files"
        use = f"  in use by {', '.join(r['in_use_by'])}" if r["in_use_by"] else ""
        click.echo(f"{r['id']:<40} {r['kind']:<8} {r['bytes']:>12} B  {what}  {r['target']}{use}")


@backups.command()
@click.argument("backup_id")
@_dir_opt
@click.option(
    "--scratch",
    "server_url",
    default=None,
    metavar="URL",
    help="Also restore into a scratch copy on this server and compare.",
)
@state_option
@handle_errors
def verify(backup_id: str, backup_dir: str, server_url: str | None, state_url: str | None) -> None:
    """Check BACKUP_ID's files against its manifest (sizes, sha256); with --scratch, also a
    test restore. Exit 1 if anything differs."""
    from tminus.backups.base import (
        BackupError,
        Manifest,
        check_files,
        validate_manifest,
    )
    from tminus.backups.registry import get_driver

    d = Path(backup_dir) / backup_id
    if not d.is_dir():  # a backup step's custom `dest`: where a deploy recorded it
        d = next((Path(x) for x in _recorded(state_url, True) if Path(x).name == backup_id), d)
    try:
        m = Manifest.load(d)
        validate_manifest(m, m.kind)
    except BackupError as exc:
        fail(str(exc), 1)
    problems = check_files(m, d)
    if not problems and m.kind == "files":  # what a restore would refuse, verify refuses
        from tminus.backups.files import archive_problems

        problems = archive_problems(m, d)
    if problems:
        click.echo(f"{backup_id}: DAMAGED", err=True)
        for p in problems:
            click.echo(f"  {p}", err=True)
        sys.exit(1)
    members = (
        f", its {len(m.contents)} archive member(s) pass the restore checks"
        if m.kind == "files"
        else ""
    )
    click.echo(f"{backup_id}: {len(m.files)} file(s) match the manifest (size and sha256){members}")
    if server_url:
        report = get_driver(m.kind).verify(m, d, server_url)
        click.echo(report.summary())
        if not report.ok:
            for x in report.mismatches:
                click.echo(f"  {x}", err=True)
            sys.exit(1)


@backups.command()
@click.option("--keep", type=click.IntRange(min=1), required=True, help="Backups kept per target.")
@_dir_opt
@click.option("--dry-run", is_flag=True, help="Say what would be deleted.")
@state_option
@handle_errors
def prune(keep: int, backup_dir: str, dry_run: bool, state_url: str | None) -> None:
    """Keep the newest KEEP backups of each target; never one a running, paused or scheduled
    deploy recorded (its rollback may need it)."""
    import shutil

    used = _in_use(state_url)
    groups: dict[tuple[str, str], list[tuple[Path, Any]]] = {}
    for d, m in _scan(Path(backup_dir)):
        if isinstance(m, Exception):
            continue
        groups.setdefault((m.kind, m.target), []).append((d, m))
    removed = 0
    for items in groups.values():
        items.sort(key=lambda x: x[1].created_at)
        for d, m in items[: max(0, len(items) - keep)]:
            holders = used.get(str(d.resolve()))
            if holders:
                click.echo(f"keep   {m.id} (in use by {', '.join(holders)})")
                continue
            click.echo(("would delete " if dry_run else "delete ") + m.id)
            if not dry_run:
                shutil.rmtree(d)
            removed += 1
    click.echo(f"{removed} backup(s) {'to delete' if dry_run else 'deleted'}")


@backups.command()
@click.argument("backup_id")
@click.option(
    "--to",
    "target",
    required=True,
    metavar="TARGET",
    help="Restore into this database URL or path (the backup's target, or another); with "
    "--plan, the name of one of the plan's database or path targets.",
)
@click.option(
    "--plan",
    "plan_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Read --to as a target of this plan (its URL resolved with the plan's secrets).",
)
@_dir_opt
@click.option(
    "--jobs",
    type=click.IntRange(min=1, max=64),
    default=2,
    show_default=True,
    help="pg_restore -j and checksum sessions (PostgreSQL; the other kinds restore serially).",
)
@click.option("--yes", is_flag=True, help="Confirm without a prompt (needed without a terminal).")
@click.option("--as", "operator", default=None, help="Who you are (recorded).")
@state_option
@handle_errors
def restore(
    backup_id: str,
    target: str,
    plan_path: str | None,
    backup_dir: str,
    jobs: int,
    yes: bool,
    operator: str | None,
    state_url: str | None,
) -> None:
    """Restore BACKUP_ID into TARGET, replacing what TARGET holds, with the restore step's
    checks: every file against the manifest first (a damaged backup is refused, TARGET left
    alone), then TARGET compared with the manifest (rows, checksums, indexes, constraints,
    sequences). Asks first; without a terminal it needs --yes. Recorded in the log of the
    deploy that made the backup. Exit 1 if the restore failed."""
    import os

    from tminus.backups.base import (
        BackupError,
        Manifest,
        check_tools,
        redact_url,
        require_intact,
    )
    from tminus.backups.recorded import deploys_recording
    from tminus.backups.registry import get_driver
    from tminus.engine.runner import default_operator
    from tminus.store import Store

    who = operator or default_operator()
    d = Path(backup_dir) / backup_id
    if not d.is_dir():  # a backup step's custom `dest`: where a deploy recorded it
        d = next((Path(x) for x in _recorded(state_url, True) if Path(x).name == backup_id), d)
    masked: Callable[[str], str] = str
    if plan_path:
        target, masked = _plan_target(plan_path, target, who)
    shown = masked(redact_url(target))
    try:
        m = Manifest.load(d)
        require_intact(m, d, m.kind)
    except BackupError as exc:
        fail(f"{exc}; nothing was restored", 1, exc.hint)
    missing = check_tools(m.kind)
    if missing:
        fail("; ".join(missing) + "; nothing was restored")
    store = Store(state_url)
    made_by = deploys_recording(store, m.id)
    origin = made_by[0][0] if made_by else None
    what = (
        f"{len(m.tables)} table(s), {sum(t.rows for t in m.tables)} row(s)"
        if m.tables
        else f"{len(m.contents) or len(m.files)} file(s)"
    )
    question = (
        f"Restore backup {m.id} ({m.kind}, {what}, made {m.created_at}"
        + (f" by deploy {origin}" if origin else "")
        + f") into {shown}? What {shown} holds now is replaced."
    )
    if not yes:
        if not (os.isatty(0) and os.isatty(1)):
            fail(
                "restoring a backup replaces the target's data and this shell is not "
                "interactive; nothing was done",
                hint="run it in a terminal, or pass --yes to confirm",
            )
        if not click.confirm(question, default=False):
            fail("not confirmed; nothing was done")
    data: dict[str, Any] = {
        "backup_id": m.id,
        "dir": str(d.resolve()),
        "target": shown,
        "by": who,
        "confirmed": "--yes" if yes else "prompt",
    }
    try:
        get_driver(m.kind).restore(m, d, target, jobs=jobs)
    except BackupError as exc:
        error = masked(str(exc))
        message = f"{who} failed to restore backup {m.id} into {shown}: {error}"
        if origin:
            store.event(origin, "backup.restore_failed", message, data={**data, "error": error})
        fail(error, 1, exc.hint)
    message = f"{who} restored backup {m.id} into {shown} (tminus backups restore); {what} match"
    if origin:
        store.event(origin, "backup.restored", message, data=data)
        message += f"; recorded in the log of {origin}"
    else:
        message += "; no deploy in the state store recorded this backup, so no log has it"
    click.echo(message)


def _plan_target(plan_path: str, name: str, who: str) -> tuple[str, Callable[[str], str]]:
    """``--plan``: the URL (or path) of target ``name`` of the plan, resolved with its
    variables and secrets, and the plan's masking of secrets."""
    from tminus.engine.runner import make_resolver
    from tminus.plan.loader import load_plan
    from tminus.plan.problems import did_you_mean, format_problems
    from tminus.steps._data import data_target

    result = load_plan(plan_path)
    if not result.ok or result.plan is None:
        fail(
            "the plan has errors:\n"
            + format_problems([p for p in result.problems if p.severity == "error"])
        )
    plan = result.plan
    names = [*plan.targets.databases, *plan.targets.paths]
    if name not in names:
        fail(
            f"plan '{plan.name}' has no database or path target '{name}'",
            hint=did_you_mean(name, names) or "targets: " + ", ".join(names),
        )
    resolver = make_resolver(plan, plan_path, "backups-restore", who, {}, Path(".tminus"))
    is_db = name in plan.targets.databases
    t = data_target(plan, resolver, database=name if is_db else None, path=None if is_db else name)
    return t.url, resolver.mask


COMMANDS: list[click.Command] = [backups]
