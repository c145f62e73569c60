"""A third-party step kind and check source, installed as a package, are checked by
``tminus check`` and run by ``tminus run`` (issue #14 item 4).

The package ``tminus_greet`` is written by the test and installed the way an installer
unpacks a wheel: its module and a ``tminus_greet-1.0.dist-info`` (``METADATA``,
``entry_points.txt``, ``RECORD``) in a directory on the children's ``PYTHONPATH``, so
``importlib.metadata`` finds its entry points exactly as for a ``pip install``: the models in
``tminus.step_models`` and ``tminus.check_models`` (read by the plan) and the implementations in
``tminus.steps`` and ``tminus.sources`` (read when a deploy runs). Nothing of tminus is patched.

Asserted: a plan using ``kind: greet`` passes ``tminus check``; the plug-in's own field rules
(``who`` must not be empty) give a located error with exit 2; without the package the kind is
an unknown step kind (exit 2); ``tminus run`` executes it (a file written, ``${…}`` resolved),
the dry run shows its description; when a later phase fails, the undo it registered (a step of
its own kind, stored as JSON in the state store and read back) runs and removes the file; an
operation (a plan derived by dumping the plan) runs it too. The plug-in source ``linecount``
measures a phase's verify check; its model's missing key is a located error.

Mutations tried: the plug-in member removed from the step union in ``plan/steps.py`` → the
check of a valid plan fails (unknown step kind); ``step_model`` not used by the error walk of
``plan/_pydantic_problems.py`` → the error points at the step, not at ``who``; the step registry's
entry-point group removed → the dry run says "not implemented"; the check-source registry's
group removed → the run fails its verify (source not implemented).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGIN = '''
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from tminus.plan.checks import CheckBase
from tminus.plan.steps import StepBase
from tminus.sources.base import CheckContext, Measurement
from tminus.steps.base import Compensation, StepContext, StepKindBase, StepOutcome


class GreetStep(StepBase):
    """Write a greeting to a file (or remove it)."""

    kind: Literal["greet"]
    who: str = Field(min_length=1)
    path: str
    remove: bool = False


class Greet(StepKindBase):
    kind: ClassVar[str] = "greet"

    async def execute(self, step: GreetStep, ctx: StepContext) -> StepOutcome:
        path = Path(ctx.resolver.resolve(step.path))
        if step.remove:
            path.unlink(missing_ok=True)
            return StepOutcome(True, f"removed {path}")
        path.write_text("hello " + ctx.resolver.resolve(step.who) + "\\n")
        return StepOutcome(True, f"greeted {step.who}", artifacts={"file": str(path)})

    def compensation(self, step: GreetStep, ctx: StepContext) -> Compensation | None:
        if step.remove:
            return None
        return Compensation(GreetStep(kind="greet", who=step.who, path=step.path, remove=True))

    def describe(self, step: GreetStep, resolver) -> str:
        return f"greet {resolver.resolve(step.who)} in {step.path}"


KIND = Greet()


class LineCountCheck(CheckBase):
    """How many lines a file has."""

    source: Literal["linecount"]
    path: str


class LineCount:
    source: ClassVar[str] = "linecount"

    async def measure(self, check: LineCountCheck, ctx: CheckContext) -> Measurement:
        path = Path(ctx.resolver.resolve(check.path))
        if not path.exists():
            return Measurement(ok=False, error=f"no file {path}")
        n = len(path.read_text().splitlines())
        return Measurement(value=n, message=f"{n} line(s) in {path}")


SOURCE = LineCount()
'''

ENTRY_POINTS = """[tminus.step_models]
greet = tminus_greet:GreetStep

[tminus.steps]
greet = tminus_greet:KIND

[tminus.check_models]
linecount = tminus_greet:LineCountCheck

[tminus.sources]
linecount = tminus_greet:SOURCE
"""

PLAN = """
name: hello
environment: test
variables:
  person: world
  outcome: "true"
phases:
  - name: greet
    steps:
      - {kind: greet, name: say hello, who: "${person}", path: greeting.txt}
    verify:
      - {source: linecount, name: one line, path: greeting.txt, expect: "== 1"}
  - name: fail
    steps:
      - {kind: run, name: boom, command: "${outcome}"}
operations:
  regreet:
    steps:
      - {kind: greet, who: operator, path: again.txt}
"""


def install(site: Path) -> None:
    """Unpack the plug-in as an installer does: its module and its dist-info."""
    pkg = site / "tminus_greet"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN)
    info = site / "tminus_greet-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: tminus-greet\nVersion: 1.0\nRequires-Dist: tminus\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    (info / "RECORD").write_text(
        "tminus_greet/__init__.py,,\n"
        "tminus_greet-1.0.dist-info/METADATA,,\n"
        "tminus_greet-1.0.dist-info/entry_points.txt,,\n"
        "tminus_greet-1.0.dist-info/RECORD,,\n"
    )


def tm(cwd: Path, site: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TMINUS_STATE"}
    env["TMINUS_OPERATOR"] = "alice"
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "tminus", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_a_plugin_kind_is_checked_and_run(tmp_path: Path) -> None:
    site = tmp_path / "site"
    install(site)
    work = tmp_path / "work"
    work.mkdir()
    (work / "plan.yaml").write_text(PLAN)

    ok = tm(work, site, "check", "plan.yaml")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    (work / "bad.yaml").write_text(PLAN.replace('who: "${person}"', 'who: ""'))
    bad = tm(work, site, "check", "bad.yaml")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "bad.yaml:10:45:" in bad.stderr and "at phases[0].steps[0].who" in bad.stderr
    assert "Traceback" not in bad.stderr

    (work / "nopath.yaml").write_text(
        PLAN.replace("linecount, name: one line, path: greeting.txt", "linecount, name: one line")
    )
    nopath = tm(work, site, "check", "nopath.yaml")
    assert nopath.returncode == 2, nopath.stdout + nopath.stderr
    assert "missing required key 'path'" in nopath.stderr, nopath.stderr
    assert "at phases[0].verify[0]" in nopath.stderr, nopath.stderr

    missing = tm(work, None, "check", "plan.yaml")
    assert missing.returncode == 2
    assert "unknown step kind 'greet'" in missing.stdout + missing.stderr

    dry = tm(work, site, "run", "plan.yaml", "--dry-run", "--var", "outcome=true")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "greet world in greeting.txt" in dry.stdout

    good = tm(work, site, "run", "plan.yaml", "--var", "outcome=true")
    assert good.returncode == 0, good.stdout + good.stderr
    assert (work / "greeting.txt").read_text() == "hello world\n"
    assert "1 line(s) in" in good.stdout, good.stdout  # the plug-in source measured it

    (work / "greeting.txt").unlink()
    failed = tm(work, site, "run", "plan.yaml", "--var", "outcome=false")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    status = json.loads(tm(work, site, "status", "hello-2", "--output", "json").stdout)
    assert status["state"] == "rolled_back", status
    assert not (work / "greeting.txt").exists()  # the plug-in's own undo ran

    # an operation is a plan derived by dumping the plan: the plug-in step survives the dump
    op = tm(work, site, "op", "run", "plan.yaml", "regreet")
    assert op.returncode == 0, op.stdout + op.stderr
    assert (work / "again.txt").read_text() == "hello operator\n"


def test_a_plugin_that_cannot_load_is_a_plan_error(tmp_path: Path) -> None:
    """docs/plugins.md: a plug-in model that fails to import is a located plan error (exit 2),
    never a traceback; a plan of built-in kinds is not affected by it. Mutation tried:
    ``PluginModels._load`` letting the import error through → the check prints a traceback
    (exit 1) and this fails."""
    site = tmp_path / "broken"
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tminus.step_models]\nbroken = no_such_module:Model\n")
    (info / "RECORD").write_text("")
    work = tmp_path / "work"
    work.mkdir()
    (work / "broken.yaml").write_text(
        "name: b\nenvironment: t\nphases:\n  - name: p\n    steps:\n"
        "      - {kind: broken, name: x}\n"
    )
    proc = tm(work, site, "check", "broken.yaml")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "broken.yaml:6:9:" in proc.stderr and "failed to load" in proc.stderr
    assert "no_such_module" in proc.stderr and "Traceback" not in proc.stderr
    (work / "plan.yaml").write_text(
        "name: ok\nenvironment: t\nphases:\n  - name: p\n    steps:\n"
        "      - {kind: run, name: x, command: 'true'}\n"
    )
    fine = tm(work, site, "check", "plan.yaml")
    assert fine.returncode == 0, fine.stdout + fine.stderr
