"""What a run needs before the engine starts: the operator, the local state directory and the
resolver of a plan's variables. A light module (no store, no database driver, no step kind):
``tminus check`` uses it (and its exposure warnings) without importing the engine (see "Start-up"
in docs/architecture.md); :mod:`tminus.engine.runner` re-exports it."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tminus.errors import PlanError, ResolveFailed
from tminus.files import STATE_DIR_NAME, exposure
from tminus.plan.interpolate import ResolveError, Resolver

if TYPE_CHECKING:
    from tminus.plan.model import Plan

__all__ = ["default_operator", "exposure_warnings", "make_resolver", "state_dir_of"]


def default_operator() -> str:
    return os.environ.get("TMINUS_OPERATOR") or getpass.getuser()


def make_resolver(
    plan: Plan,
    plan_path: str,
    deploy_id: str,
    operator: str,
    overrides: dict[str, str],
    state_dir: Path,
) -> Resolver:
    builtins = {
        "deploy_id": deploy_id,
        "plan_name": plan.name,
        "plan_version": plan.version or "",
        "environment": plan.environment,
        "operator": operator,
        "plan_dir": str(Path(plan_path).resolve().parent),
        "state_dir": str(state_dir),
    }
    unknown = sorted(set(overrides) - set(plan.variables))
    if unknown:
        raise PlanError(
            f"--var names an undeclared variable: {', '.join(unknown)}",
            hint="declare it under 'variables:' in the plan",
        )
    try:
        return Resolver.for_plan(
            plan.variables,
            plan.secrets,
            builtins=builtins,
            overrides=overrides,
            base_dir=Path(plan_path).resolve().parent,
        )
    except ResolveError as exc:
        raise ResolveFailed(str(exc), hint="set it in the environment, or fix the plan") from None


def state_dir_of(url: str) -> Path:
    """The local state directory for a state store URL: a SQLite file's directory, else
    ``.tminus`` (undo records, progress, backups)."""
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).resolve().parent
    if "://" not in url:  # a bare SQLite path (TMINUS_STATE=state/tminus.db)
        return Path(url).resolve().parent
    return Path(".tminus").resolve()


def exposure_warnings(plan: Plan, r: Resolver | None, state_dir: Path) -> list[str]:
    """``tminus check`` and ``run``: the state directory and the plan's backup directories
    that exist and are open to their group or other users. A ``dest`` that cannot be resolved
    yet (a secret, an artifact) is skipped."""
    from tminus.plan.walk import backup_dests

    owned = state_dir.resolve().name == STATE_DIR_NAME
    fix = "`tminus run` makes it 0700" if owned else ""
    dirs: dict[Path, tuple[str, str]] = {state_dir.resolve(): ("the state directory", fix)}
    for dest in backup_dests(plan):
        if dest is None:
            root = state_dir / "backups"
        elif "${" not in dest:
            root = Path(dest)
        elif r is None:
            continue
        else:
            try:
                root = Path(r.resolve(dest))
            except Exception:  # unresolvable here: the step resolves it when it runs
                continue
        fix = "its next backup makes it 0700" if owned and dest is None else ""
        dirs.setdefault(root.resolve(), ("the backup directory", fix))
    return [w for d, (what, fix) in dirs.items() if (w := exposure(d, what, fix))]
