"""The engine knows step kinds by their capabilities, never by their names or classes; and it
builds the deploy's fleet only when a step uses it."""

from __future__ import annotations

import ast
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tminus.engine import runner
from tminus.hosts import fleet as fleet_module
from tminus.plan.interpolate import Resolver
from tminus.plan.loader import load_plan
from tminus.plan.steps import MaintenanceStep, RestoreStep, RunStep
from tminus.steps import registry
from tminus.steps.base import StepContext, StepKindBase, StepOutcome

ENGINE = Path(__file__).resolve().parents[2] / "src" / "tminus" / "engine"
KINDS = frozenset(registry.BUILTIN_MODULES)
#: The capabilities a kind declares; the engine reads them as typed members, never by
#: ``getattr``/``hasattr`` (duck typing).
CAPABILITIES = frozenset(
    {
        "rerun_safe",
        "per_host",
        "own_timeout",
        "preflight",
        "maintenance_span",
        "span_step",
        "restores",
        "compensation",
    }
)
#: What the engine may import of the plan's step models: the union and the base.
STEP_MODELS_ALLOWED = frozenset({"Step", "StepBase"})


def _kind_names_in(node: ast.AST) -> list[str]:
    return [
        n.value
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in KINDS
    ]


def violations(source: str, where: str = "<source>") -> list[str]:
    """Where ``source`` knows a step kind by name or class, or a capability by duck typing."""
    out: list[str] = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        at = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Compare):
            names = _kind_names_in(node)
            if names and "kind" in ast.unparse(node).replace(repr(names[0]), ""):
                out.append(f"{at}: compares a kind with {names}: {ast.unparse(node)}")
        elif isinstance(node, ast.Set | ast.List | ast.Tuple):
            names = _kind_names_in(node)
            if len(names) >= 2:
                out.append(f"{at}: a collection of kind names {names}")
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func.endswith("get_kind") and node.args and _kind_names_in(node.args[0]):
                out.append(f"{at}: looks a kind up by name: {ast.unparse(node)}")
            for kw in node.keywords:
                if kw.arg == "kind" and _kind_names_in(kw.value):
                    out.append(f"{at}: builds a step of a named kind: {ast.unparse(node)}")
            if func in ("getattr", "hasattr") and len(node.args) >= 2:
                attr = node.args[1]
                if isinstance(attr, ast.Constant) and attr.value in CAPABILITIES:
                    out.append(f"{at}: duck-types a capability: {ast.unparse(node)}")
            if func == "isinstance" and len(node.args) == 2:
                classes = [c for c in ast.walk(node.args[1]) if isinstance(c, ast.Name)]
                for cls in classes:
                    if cls.id.endswith("Step") and cls.id not in STEP_MODELS_ALLOWED:
                        out.append(f"{at}: tests a step's class: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = {a.name for a in node.names}
            if node.module == "tminus.plan.steps" and names - STEP_MODELS_ALLOWED:
                out.append(f"{at}: imports step classes {sorted(names - STEP_MODELS_ALLOWED)}")
            if node.module in set(registry.BUILTIN_MODULES.values()):
                out.append(f"{at}: imports a step kind's module {node.module}")
    return out


def test_the_engine_source_never_names_a_step_kind_or_class() -> None:
    found: list[str] = []
    sources = sorted(ENGINE.glob("*.py"))
    assert len(sources) >= 5
    for path in sources:
        found += violations(path.read_text(), path.name)
    assert found == []


@pytest.mark.parametrize(
    "snippet",
    [
        'own_timeout = kind_name == "run" or per_host',  # the mutation the issue names
        'if s.get("kind") != "maintenance": pass',
        '_SAFE = frozenset({"approve", "wait", "notify", "maintenance"})',
        'k = get_kind("maintenance")',
        'step = MaintenanceStep(kind="maintenance", action="off")',
        "ok = isinstance(step, MaintenanceStep)",
        "from tminus.plan.steps import MaintenanceStep, Step",
        'per_host = bool(getattr(kind, "per_host", False))',
        'hook = getattr(kind, "preflight", None)',
    ],
)
def test_the_check_catches_each_way_of_knowing_a_kind(snippet: str) -> None:
    """The check above is not vacuous: each way the engine used to know kinds is caught."""
    assert violations(snippet)


def test_words_that_are_not_kinds_pass() -> None:
    """The same words used for something else (a trigger's action, an event type)."""
    assert violations('if t.action == "notify": self._event("notify", text)') == []


def test_builtin_kinds_declare_what_the_engine_used_to_hardcode() -> None:
    kinds = {name: registry.get_kind(name) for name in sorted(KINDS)}
    assert all(isinstance(k, StepKindBase) for k in kinds.values())
    assert {n for n, k in kinds.items() if k.rerun_safe} == {
        "approve",
        "wait",
        "notify",
        "maintenance",
    }
    assert {n for n, k in kinds.items() if k.per_host} == {"ssh", "upload", "release"}
    assert {n for n, k in kinds.items() if k.own_timeout} == {"run", "ssh", "upload", "release"}
    on = MaintenanceStep(kind="maintenance", action="on")
    off = MaintenanceStep(kind="maintenance", action="off")
    assert kinds["maintenance"].maintenance_span(on) == "open"
    assert kinds["maintenance"].maintenance_span(off) == "close"
    run = RunStep(kind="run", command="true")
    others = [k for n, k in kinds.items() if n != "maintenance"]
    assert [k.kind for k in others if k.maintenance_span(run) is not None] == []
    restore = RestoreStep.model_validate({"kind": "restore", "from": "b1", "database": "app"})
    assert kinds["restore"].restores(restore) == "app <- b1"
    assert registry.is_fleet_kind("ssh") and not registry.is_fleet_kind("run")
    assert not registry.is_fleet_kind("no_such_kind")


class _PlainKind:
    """A third-party kind written against the first Protocol: no capabilities declared."""

    kind: ClassVar[str] = "plain_thirdparty"
    rerun_safe: ClassVar[bool] = True

    async def execute(self, step: Any, ctx: StepContext) -> StepOutcome:
        return StepOutcome(True, "plain")

    def describe(self, step: Any, resolver: Resolver) -> str:
        return "plain step"

    def preflight(self, step: Any, plan: Any, resolver: Resolver, state_dir: Path) -> list[str]:
        return ["plain problem"]


_PLAIN = _PlainKind()


@pytest.fixture
def plain_kind(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = _PlainKind.kind
    monkeypatch.setattr(registry.KINDS, "_third_party", {name: f"{__name__}:_PLAIN"}, raising=True)
    yield name
    registry._cache.pop(name, None)
    registry.KINDS._cache.pop(name, None)


def test_a_third_party_kind_gets_the_defaults_of_what_it_does_not_declare(
    plain_kind: str,
) -> None:
    kind = registry.get_kind(plain_kind)
    assert kind.kind == plain_kind
    assert kind.rerun_safe is True  # declared: kept
    assert kind.per_host is False and kind.own_timeout is False  # the defaults
    assert kind.maintenance_span(object()) is None and kind.restores(object()) is None
    assert kind.compensation(object(), None) is None  # type: ignore[arg-type]
    assert kind.preflight(object(), None, Resolver(), Path(".")) == ["plain problem"]  # type: ignore[arg-type]
    assert kind.describe(object(), Resolver()) == "plain step"
    assert registry.get_kind(plain_kind) is kind


# --- the fleet: built on first use --------------------------------------------------------


@pytest.fixture
def fleets_built(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[object]]:
    """Every Fleet constructed from now on: the deploy's (``steps.base.DeployFleet``, which
    the engine holds), elsewhere (the preflight's host key check), anywhere."""
    import tminus.steps.base as base_module

    built: dict[str, list[object]] = {"engine": [], "elsewhere": [], "anywhere": []}
    real = fleet_module.Fleet

    def counted(where: str) -> type:
        class Counted(real):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                built[where].append(self)
                built["anywhere"].append(self)
                super().__init__(*args, **kwargs)

        return Counted

    deploy_cls = counted("engine")
    real_get = base_module.DeployFleet.get

    def get(self: Any) -> object:
        if self._fleet is None:  # build the deploy's fleet with the counting class
            plan, resolver, events = self._args
            self._fleet = deploy_cls(plan, resolver, events=events)
        return real_get(self)

    monkeypatch.setattr(fleet_module, "Fleet", counted("elsewhere"))
    monkeypatch.setattr(base_module.DeployFleet, "get", get)
    return built


def _deploy(tmp_path: Path, steps: list[dict[str, Any]]) -> tuple[str, int, str]:
    plan = {
        "tminus": 1,
        "name": "caps",
        "environment": "test",
        "phases": [{"name": "only", "steps": steps}],
    }
    path = tmp_path / "plan.yaml"
    path.write_text(json.dumps(plan))
    loaded = load_plan(path)
    assert loaded.ok and loaded.plan is not None, loaded.problems
    opts = runner.RunOptions(state_url=f"sqlite:///{tmp_path}/state.db", operator="t", quiet=True)
    with contextlib.chdir(tmp_path):
        return runner.start_loaded(loaded.plan, path.read_text(), str(path), opts)


def test_a_deploy_without_fleet_steps_builds_no_fleet(
    tmp_path: Path, fleets_built: dict[str, list[object]]
) -> None:
    """Mutation: ``DeployFleet.__init__`` building the Fleet at once again: one is built."""
    _, code, message = _deploy(
        tmp_path,
        [
            {"kind": "run", "command": "echo one > one.txt"},
            {"kind": "wait", "duration": "0s"},
            {"kind": "maintenance", "action": "on", "flag_file": str(tmp_path / "m.flag")},
            {"kind": "run", "command": "echo two > two.txt"},
        ],
    )
    assert code == 0, message
    assert (tmp_path / "two.txt").exists() and not (tmp_path / "m.flag").exists()
    assert fleets_built["anywhere"] == []


def test_a_deploy_with_a_fleet_step_builds_one_fleet(
    tmp_path: Path, fleets_built: dict[str, list[object]]
) -> None:
    """The control: ``ssh`` steps (on localhost, run locally) build the deploy's fleet, once,
    shared by its steps (their preflight's host key check opens its own)."""
    _, code, message = _deploy(
        tmp_path,
        [
            {"kind": "ssh", "on": "localhost", "command": "echo a > a.txt"},
            {"kind": "ssh", "on": "localhost", "command": "echo b > b.txt"},
        ],
    )
    assert code == 0, message
    assert len(fleets_built["engine"]) == 1
