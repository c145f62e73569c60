"""``tminus backups list|verify|prune``: the backups deploys made, on disk."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import click

from tminus.cli._util import echo_json, fail, handle_errors

__all__ = ["COMMANDS"]

_dir_opt = click.option(
    "--dir",
    "backup_dir",
    type=click.Path(file_okay=False),
    default=".tminus/backups",
    show_default=True,
    help="Where the backups are (a backup step's `dest`).",
)
_state_opt = click.option("--state", "state_url", envvar="TMINUS_STATE", default=None)


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


def _in_use(state_url: str | None) -> dict[str, list[str]]:
    """backup directory → deploys that have not ended and recorded it (their rollback may
    restore it)."""
    from tminus.store import Store
    from tminus.store.store import TERMINAL_STATES

    store = Store(state_url)
    out: dict[str, list[str]] = {}
    for d in store.list_deploys(limit=10000):
        if d["state"] in TERMINAL_STATES:
            continue
        for arts in store.artifacts_by_step_id(d["id"]).values():
            if isinstance(arts, dict) and arts.get("backup_id") and arts.get("dir"):
                out.setdefault(str(Path(arts["dir"]).resolve()), []).append(str(d["id"]))
    return out


@click.group()
def backups() -> None:
    """Backups made by `backup` steps: list, verify, prune."""


@backups.command(name="list")
@_dir_opt
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
@_state_opt
@handle_errors
def list_(backup_dir: str, output: str, state_url: str | None) -> None:
    """List backups, newest last, with the deploys still relying on them."""
    used = _in_use(state_url)
    rows: list[dict[str, Any]] = []
    for d, m in _scan(Path(backup_dir)):
        if isinstance(m, Exception):
            rows.append({"id": d.name, "error": str(m)})
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
@handle_errors
def verify(backup_id: str, backup_dir: str, server_url: str | None) -> None:
    """Check BACKUP_ID's files against its manifest (sizes, sha256); with --scratch, also a
    test restore. Exit 1 if anything differs."""
    from tminus.backups.base import (
        BackupError,
        Manifest,
        check_files,
        get_driver,
        validate_manifest,
    )

    d = Path(backup_dir) / backup_id
    try:
        m = Manifest.load(d)
        validate_manifest(m, m.kind)
    except BackupError as exc:
        fail(str(exc), 1)
    problems = check_files(m, d)
    if problems:
        click.echo(f"{backup_id}: DAMAGED", err=True)
        for p in problems:
            click.echo(f"  {p}", err=True)
        sys.exit(1)
    click.echo(f"{backup_id}: {len(m.files)} file(s) match the manifest (size and sha256)")
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
@_state_opt
@handle_errors
def prune(keep: int, backup_dir: str, dry_run: bool, state_url: str | None) -> None:
    """Keep the newest KEEP backups of each target; never one a running, paused or scheduled
    deploy recorded (its rollback may need it)."""
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


COMMANDS: list[click.Command] = [backups]
