"""Plans a ``tminus serve`` knows: registered by path (``tminus plans register PATH``,
``POST /api/v1/plans {"path"}``) or uploaded (``POST /api/v1/plans/upload {"filename",
"text"}``: written under the store's state directory, ``serve/plans/``, private), and checked
first: a plan with errors is not registered, its problems are the answer. A deploy started
from the API or the dashboard names a registered plan by name and environment; its file is
read and checked again then (it may have changed since).

Each is two steps, so that the API can ask for the caller's grant on the plan's name and
environment in between: :func:`check_path` / :func:`check_upload` (parse and check, once),
then :func:`record` (the upload's file written, the registration stored)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tminus.errors import PlanError

if TYPE_CHECKING:
    from tminus.plan.loader import LoadResult
    from tminus.plan.model import Plan
    from tminus.store import Store

__all__ = [
    "Checked",
    "Registered",
    "check_path",
    "check_upload",
    "load_checked",
    "record",
    "register_path",
]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Registered:
    name: str
    environment: str
    path: str


@dataclass(frozen=True)
class Checked:
    """A plan that passed ``tminus check``: its text, and its file (None for an upload not
    written yet)."""

    plan: Plan
    text: str
    path: Path | None


def _passed(result: LoadResult) -> Plan:
    from tminus.plan.problems import format_problems

    if result.plan is None or any(p.severity == "error" for p in result.problems):
        raise PlanError("the plan has errors:\n" + format_problems(result.problems))
    return result.plan


def load_checked(path: str) -> tuple[Plan, str]:
    """The plan at ``path``, checked as ``tminus check`` does; PlanError with its problems
    (file:line:column and hints) when it has errors or cannot be read."""
    from tminus.plan.loader import load_plan_text

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read plan {path}: {exc.strerror}") from None
    return _passed(load_plan_text(text, path)), text


def check_path(path: str) -> Checked:
    if "\0" in path:  # no file has such a name (Path.resolve would raise ValueError)
        raise PlanError(f"{path!r} is not a path: it holds a NUL character")
    absolute = Path(path).resolve()
    plan, text = load_checked(str(absolute))
    return Checked(plan, text, absolute)


def check_upload(filename: str, text: str) -> Checked:
    from tminus.plan.loader import load_plan_text

    shown = _SAFE.sub("_", Path(filename).name) or "plan.yaml"
    return Checked(_passed(load_plan_text(text, shown)), text, None)


def record(store: Store, state_dir: Path, checked: Checked, person: str) -> Registered:
    """Register a checked plan under its name and environment (replacing an earlier
    registration). An upload is first kept as a private file under
    ``STATE_DIR/serve/plans/``; relative paths in it resolve against that directory, so an
    uploaded plan must carry what it needs (or use absolute paths)."""
    plan, path = checked.plan, checked.path
    if path is None:
        from tminus.files import private_dir, private_text

        folder = state_dir / "serve" / "plans"
        private_dir(folder)
        path = folder / f"{_SAFE.sub('_', plan.name)}--{_SAFE.sub('_', plan.environment)}.yaml"
        with private_text(path) as fh:
            fh.write(checked.text)
    digest = hashlib.sha256(checked.text.encode()).hexdigest()
    store.register_plan(plan.name, plan.environment, str(path), digest, plan.description, person)
    return Registered(plan.name, plan.environment, str(path))


def register_path(store: Store, path: str, person: str) -> Registered:
    """``tminus plans register``: check the plan at ``path`` and register it by its absolute
    path (nothing is written, so no state directory is needed)."""
    return record(store, Path("."), check_path(path), person)
