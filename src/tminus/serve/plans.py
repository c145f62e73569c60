"""Plans a ``tminus serve`` knows: registered by path (``tminus plans register PATH``,
``POST /api/v1/plans {"path"}``) or uploaded (``POST /api/v1/plans {"filename", "text"}``:
written under the store's state directory, ``serve/plans/``, private), and checked first: a
plan with errors is not registered, its problems are the answer. A deploy started from the
API or the dashboard names a registered plan by name and environment; its file is read and
checked again then (it may have changed since)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tminus.errors import PlanError

if TYPE_CHECKING:
    from tminus.plan.model import Plan
    from tminus.store import Store

__all__ = ["Registered", "load_checked", "register_path", "register_upload"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Registered:
    name: str
    environment: str
    path: str


def load_checked(path: str) -> tuple[Plan, str]:
    """The plan at ``path``, checked as ``tminus check`` does; PlanError with its problems
    (file:line:column and hints) when it has errors or cannot be read."""
    from tminus.plan.loader import load_plan
    from tminus.plan.problems import format_problems

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror}") from None
    result = load_plan(path)
    if result.plan is None or any(p.severity == "error" for p in result.problems):
        raise PlanError("the plan has errors:\n" + format_problems(result.problems))
    return result.plan, text


def register_path(store: Store, path: str, person: str) -> Registered:
    """Check the plan at ``path`` and register it (absolute path) under its name and
    environment."""
    absolute = str(Path(path).resolve())
    plan, text = load_checked(absolute)
    store.register_plan(
        plan.name,
        plan.environment,
        absolute,
        hashlib.sha256(text.encode()).hexdigest(),
        plan.description,
        person,
    )
    return Registered(plan.name, plan.environment, absolute)


def register_upload(
    store: Store, state_dir: Path, filename: str, text: str, person: str
) -> Registered:
    """Check an uploaded plan's text, keep it as a private file under
    ``STATE_DIR/serve/plans/`` and register that file. Relative paths in it resolve against
    that directory: an uploaded plan must carry what it needs (or use absolute paths)."""
    from tminus.files import private_dir, private_text
    from tminus.plan.loader import load_plan_text
    from tminus.plan.problems import format_problems

    shown = _SAFE.sub("_", Path(filename).name) or "plan.yaml"
    result = load_plan_text(text, shown)
    if result.plan is None or any(p.severity == "error" for p in result.problems):
        raise PlanError("the plan has errors:\n" + format_problems(result.problems))
    plan = result.plan
    folder = state_dir / "serve" / "plans"
    private_dir(folder)
    target = folder / f"{_SAFE.sub('_', plan.name)}--{_SAFE.sub('_', plan.environment)}.yaml"
    with private_text(target) as fh:
        fh.write(text)
    return register_path(store, str(target), person)
