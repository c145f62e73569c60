"""A database's state in the manifest's terms (:class:`DbState`) and the fail-closed comparisons
of the drivers: every difference between a state and a manifest (:func:`diff_state`), a
restored target that must equal its manifest (:func:`require_match`), and the report a
verification starts with (:func:`intact_report`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tminus.backups.base import (
    BackupDriver,
    BackupError,
    Manifest,
    SchemaObject,
    SequenceEntry,
    TableEntry,
    VerifyReport,
    require_intact,
)

if TYPE_CHECKING:
    from tminus.backups.backup_dir import BackupDir

__all__ = ["DbState", "diff_state", "intact_report", "require_match"]


@dataclass
class DbState:
    """What a database holds now, in the manifest's terms."""

    tables: list[TableEntry]
    indexes: list[SchemaObject]
    constraints: list[SchemaObject]
    sequences: list[SequenceEntry]

    def manifest(
        self,
        bdir: BackupDir,
        kind: str,
        target: str,
        tool_version: str,
        server_version: str,
        details: dict[str, Any],
    ) -> Manifest:
        """The manifest of a database backup of this state, written into ``bdir``."""
        return Manifest(
            id=bdir.id,
            kind=kind,
            target=target,
            created_at=bdir.created_at,
            tool_version=tool_version,
            server_version=server_version,
            files=[],
            tables=self.tables,
            indexes=self.indexes,
            constraints=self.constraints,
            sequences=self.sequences,
            details=details,
        )


def diff_state(manifest: Manifest, state: DbState) -> list[str]:
    """Every difference between a manifest and a database's state (empty when equal)."""
    out: list[str] = []
    if not manifest.tables:
        out.append("0 tables checked: the manifest lists no tables")
    want = {t.name: t for t in manifest.tables}
    have = {t.name: t for t in state.tables}
    for name in sorted(want.keys() - have.keys()):
        out.append(f"table {name} is missing")
    for name in sorted(have.keys() - want.keys()):
        out.append(f"table {name} is not in the manifest")
    for name in sorted(want.keys() & have.keys()):
        w, h = want[name], have[name]
        if w.rows != h.rows:
            out.append(f"table {name}: {h.rows} rows, manifest says {w.rows}")
        elif w.checksum != h.checksum:
            out.append(f"table {name}: checksum {h.checksum}, manifest says {w.checksum}")
    for label, ws, hs in (
        ("index", manifest.indexes, state.indexes),
        ("constraint", manifest.constraints, state.constraints),
    ):
        wm = {(o.table, o.name): o.definition for o in ws}
        hm = {(o.table, o.name): o.definition for o in hs}
        for key in sorted(wm.keys() - hm.keys()):
            out.append(f"{label} {key[1]} on {key[0]} is missing")
        for key in sorted(hm.keys() - wm.keys()):
            out.append(f"{label} {key[1]} on {key[0]} is not in the manifest")
        for key in sorted(wm.keys() & hm.keys()):
            if wm[key] != hm[key]:
                out.append(f"{label} {key[1]} on {key[0]}: {hm[key]!r}, manifest: {wm[key]!r}")
    wseq = {s.name: s for s in manifest.sequences}
    hseq = {s.name: s for s in state.sequences}
    for name in sorted(wseq.keys() - hseq.keys()):
        out.append(f"sequence {name} is missing")
    for name in sorted(hseq.keys() - wseq.keys()):
        out.append(f"sequence {name} is not in the manifest")
    for s in state.sequences:
        if s.max_value is not None and (s.last_value is None or s.last_value < s.max_value):
            out.append(
                f"sequence {s.name}: last value {s.last_value} is below max({s.column}) "
                f"= {s.max_value} in {s.table}; new rows would collide"
            )
    return out


def require_match(driver: BackupDriver, manifest: Manifest, target_url: str, shown: object) -> None:
    """After a restore: the target must equal the manifest, or the restore fails."""
    problems = driver.compare(manifest, target_url)
    if problems:
        raise BackupError(
            f"restored {shown} differs from backup {manifest.id}: " + "; ".join(problems)
        )


def intact_report(
    manifest: Manifest, backup_dir: str | os.PathLike[str], kind: str
) -> tuple[VerifyReport, bool]:
    """The report a verify starts with, and whether the backup's files are intact (if not,
    the report already says why and there is nothing to restore)."""
    report = VerifyReport(manifest.id, kind)
    try:
        require_intact(manifest, backup_dir, kind)
    except BackupError as exc:
        report.mismatches.append(str(exc))
        return report, False
    return report, True
