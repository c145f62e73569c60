"""Start-up budget of the ``tminus`` entry point (issue #14 item 8).

Each test runs the CLI in a fresh interpreter (``tminus.cli.app:cli``, what the ``tminus``
console script calls) and reads ``sys.modules`` once the command is done: a count of modules,
not a timing, so the test is steady on a loaded machine. ``bench/startup.py`` gives the times.

Asserted: ``import tminus.cli.app`` and ``tminus --help`` stay within a module budget and load
no plan model, engine, store or database driver; ``tminus check`` of the quick start loads the
plan modules but no SQLAlchemy, no ``tminus.store`` and no engine module beyond the light
``tminus.engine.prepare`` (operator, state directory, resolver).

``tminus check`` imports no ``importlib.metadata`` (pydantic's plug-in discovery) and the
plan's model modules do not postpone their annotations.

Mutations tried: ``import sqlalchemy`` at the top of ``cli/app.py`` →
``test_help_imports_no_heavy_module`` and ``test_import_of_the_cli_stays_within_budget`` fail
(and ``test_check_imports_no_database_nor_engine``); ``from tminus.engine.runner import
default_operator`` back in ``cli/plan.py``'s ``_warn_exposed`` →
``test_check_imports_no_database_nor_engine`` fails; ``cli/plan.py`` taking
``exposure_warnings`` from ``tminus.steps._data`` again (as before: asyncio, the backup
drivers' base) → the same test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart" / "plan.yaml"

#: sys.modules after the command (a bare ``python`` has ~30; click alone brings ~60).
HELP_BUDGET = 131
#: ``check`` validates with pydantic and PyYAML (~275 modules in all; 320 before pydantic ran
#: without its plug-in discovery).
CHECK_BUDGET = 290

#: Never needed to print help.
NOT_FOR_HELP = ("sqlalchemy", "pydantic", "yaml", "jinja2", "asyncssh", "httpx", "rich")
NOT_FOR_HELP_TMINUS = ("tminus.engine", "tminus.store", "tminus.plan", "tminus.steps")
#: Never needed to check a plan.
NOT_FOR_CHECK = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "pymysql",
    "redis",
    "asyncssh",
    "jinja2",
    "asyncio",
    "httpx",
    "tminus.steps",
    "tminus.backups",
    # pydantic's plug-in discovery (tminus runs pydantic without its plug-ins)
    "importlib.metadata",
    "email",
)

#: The plan's model modules: no postponed annotations (pydantic would compile each
#: annotation string again when it builds the class: ~800 ``compile`` calls per ``check``).
MODEL_MODULES = (
    "_base",
    "_step_base",
    "_steps_basic",
    "_steps_data",
    "_steps_fleet",
    "_steps_kube",
    "_steps_traffic",
    "checks",
    "model",
    "notifications",
    "targets",
)

_RUN = """
import json, sys
from tminus.cli.app import cli
args = json.loads(sys.argv[1])
if args is not None:
    try:
        cli(args, prog_name="tminus", standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
with open(sys.argv[2], "w") as f:
    json.dump(sorted(sys.modules), f)
"""


def _modules(args: list[str] | None, tmp_path: Path) -> list[str]:
    """The modules loaded by ``tminus ARGS`` (None: by ``import tminus.cli.app`` alone)."""
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if k != "TMINUS_STATE"}
    proc = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(args), str(out)],
        cwd=tmp_path,  # no state directory here: check's exposure warnings find nothing
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # `import tminus` registers an empty stand-in for pydantic's plug-in loader (a module
    # object made in memory, nothing imported): not a module of pydantic's to count
    return [m for m in json.loads(out.read_text()) if m != "pydantic.plugin._loader"]


def _under(modules: list[str], roots: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == r or m.startswith(r + ".") for r in roots)]


def test_import_of_the_cli_stays_within_budget(tmp_path: Path) -> None:
    mods = _modules(None, tmp_path)
    assert len(mods) <= HELP_BUDGET, (len(mods), mods)
    assert not _under(mods, NOT_FOR_HELP + NOT_FOR_HELP_TMINUS)


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    mods = _modules(["--help"], tmp_path)
    assert "tminus.cli.app" in mods  # the measure is real: the CLI ran in that interpreter
    assert len(mods) <= HELP_BUDGET, (len(mods), mods)
    assert not _under(mods, NOT_FOR_HELP + NOT_FOR_HELP_TMINUS)


def test_check_imports_no_database_nor_engine(tmp_path: Path) -> None:
    mods = _modules(["check", str(QUICKSTART)], tmp_path)
    assert "tminus.plan.loader" in mods  # it did check the plan
    assert len(mods) <= CHECK_BUDGET, (len(mods), _under(mods, ("tminus",)))
    assert not _under(mods, NOT_FOR_CHECK)
    assert not _under(mods, ("tminus.store",))
    assert set(_under(mods, ("tminus.engine",))) <= {"tminus.engine", "tminus.engine.prepare"}


def test_pydantic_runs_without_its_plugins(tmp_path: Path) -> None:
    """``import tminus`` puts a plug-in loader that finds none in place of pydantic's: no
    ``pydantic`` entry point is looked for, and no pydantic plug-in sees a plan's values.

    Mutation tried: ``_without_pydantic_plugins()`` not called in ``tminus/__init__.py`` →
    this test and ``test_check_imports_no_database_nor_engine`` fail (importlib.metadata)."""
    code = (
        "import sys, tminus\n"
        "from pydantic.plugin._loader import get_plugins\n"
        "from tminus.plan.loader import load_plan\n"
        f"load_plan({str(QUICKSTART)!r})\n"
        "print(list(get_plugins()), 'importlib.metadata' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "False"], proc.stdout


def test_plan_models_do_not_postpone_annotations() -> None:
    """Mutation tried: ``from __future__ import annotations`` put back in ``plan/checks.py``
    → fails naming it."""
    plan = ROOT / "src" / "tminus" / "plan"
    postponed = [
        name
        for name in MODEL_MODULES
        if "from __future__ import annotations" in (plan / f"{name}.py").read_text()
    ]
    assert not postponed, postponed
