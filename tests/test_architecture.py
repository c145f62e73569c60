"""Import contracts over the real import graph (issue #14 item 2).

Every module under ``src/tminus`` is parsed with :mod:`ast`; every ``import`` counts, at module
level and inside functions (a lazy import is still a dependency). Imports under
``if TYPE_CHECKING:`` are collected separately (they do not run) and must obey the same
contracts. Modules are grouped into *packages*: ``tminus.X…`` belongs to ``X`` (a sub-package
such as ``plan`` or a top-level module such as ``work``).

:data:`CONTRACTS` says which parts of tminus each package may import: a package name
(``plan``: any module of it) or one module (``sources.base``: that module only).
:data:`KNOWN` names the violations not fixed yet, each with its reason; they are allowed, and
are exempt from the cycle check, so that the test fails on any NEW violation. The
``imports`` column of the table in ``docs/architecture.md`` is parsed and must equal these
two tables (known exceptions after ``known:``), so the doc cannot drift.

Asserted: ``plan`` imports nothing else of tminus; every package's imports ⊆ its contract
(+ its known exceptions); no cycle between packages; the engine reaches the plug-in families
only through their ``base`` modules and registries; a family's ``base`` imports none of its
drivers (``backups.base`` used to import all four through ``get_driver``).

Mutations tried: ``import tminus.steps`` added to ``tminus/sources/sql.py`` →
``test_every_package_imports_only_its_contract`` (sources → steps) and
``test_no_cycles_between_packages`` (steps ↔ sources) fail; ``from tminus.backups.postgres
import PostgresDriver`` inside a function of ``backups/base.py`` →
``test_plugin_bases_import_no_driver`` fails; ``tminus.errors`` added to the ``plan`` row of
the doc → ``test_doc_import_table_matches_contracts`` fails.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import tminus

SRC = Path(tminus.__file__).parent
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

ANY = "*"  # may import anything (the CLI composes everything, lazily inside commands)

#: package → the parts of tminus it may import.
CONTRACTS: dict[str, frozenset[str]] = {
    "plan": frozenset(),
    "errors": frozenset(),
    "faults": frozenset(),
    "procfs": frozenset(),
    "files": frozenset(),
    "security": frozenset(),
    "registry": frozenset(),
    "http": frozenset({"plan"}),
    "clock": frozenset(),
    "states": frozenset(),
    "work": frozenset({"procfs"}),
    "runloop": frozenset(),
    "sqlrun": frozenset({"plan.sqlbind", "work"}),
    "store": frozenset({"clock", "errors", "faults", "files", "procfs", "states"}),
    "hosts": frozenset({"errors", "plan", "runloop", "work"}),
    "flags": frozenset({"errors", "registry", "plan"}),
    "routers": frozenset({"errors", "registry", "plan", "hosts", "flags.base"}),
    "backups": frozenset({"errors", "registry", "files", "plan", "sqlrun", "work"}),
    "sources": frozenset(
        {
            "errors",
            "plan",
            "hosts",
            "work",
            "sqlrun",
            "http",
            "registry",
            "backups.registry",
            "backups.targets",
            "routers.haproxy_api",
        }
    ),
    "analysis": frozenset({"plan", "sources.base"}),
    "steps": frozenset(
        {
            "errors",
            "files",
            "plan",
            "hosts",
            "runloop",
            "work",
            "sqlrun",
            "analysis.runner",
            "backups.base",
            "backups.recorded",
            "backups.registry",
            "backups.targets",
            "flags.base",
            "sources.base",
            "routers.base",
            "http",
            "registry",
        }
    ),
    "notifiers": frozenset({"errors", "plan", "registry"}),
    "engine": frozenset(
        {
            "notifiers.base",
            "registry",
            "clock",
            "errors",
            "faults",
            "files",
            "procfs",
            "plan",
            "runloop",
            "states",
            "store",
            "work",
            "steps.base",
            "steps.registry",
            "sources.base",
        }
    ),
    "serve": frozenset(
        {
            "clock",
            "engine",
            "errors",
            "files",  # an uploaded plan is kept as a private file
            "plan",
            "procfs",
            "report",  # the API serves the after-action report and the watch's section
            "security",
            "sources.base",
            "states",
            "store",
        }
    ),
    "report": frozenset({"clock", "errors", "plan", "states", "store"}),
    "testing": frozenset({"clock", "cli", "faults", "plan", "routers", "serve.workers", "states"}),
    "cli": frozenset({ANY}),
    "__main__": frozenset({"cli"}),
    "tminus": frozenset(),  # the root __init__
}

#: package → {imported part: why it is still there}: violations not fixed yet.
KNOWN: dict[str, dict[str, str]] = {}

#: Packages the doc's table need not list (entry points, the root package).
DOC_OMITS = frozenset({"__main__", "tminus"})

#: Plug-in families: ``base`` is the interface; a registry maps kinds to modules.
FAMILIES = ("backups", "flags", "hosts", "notifiers", "routers", "sources", "steps")


@dataclass(frozen=True)
class Edge:
    src: str  # importing module, e.g. tminus.sources.sql
    dst: str  # imported module, e.g. tminus.plan.sqlbind
    type_only: bool  # under `if TYPE_CHECKING:`


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    rel = Path(*dotted.split("."))
    base = SRC.parent / rel
    return base.with_suffix(".py").is_file() or base.is_dir()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                out.update(id(n) for n in ast.walk(stmt))
    return out


def _edges() -> list[Edge]:
    edges: list[Edge] = []
    for path in sorted(SRC.rglob("*.py")):
        mod = _module_name(path)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        tc = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if _is_module(sub) else base)
            for t in targets:
                if t == "tminus" or t.startswith("tminus."):
                    edges.append(Edge(mod, t, id(node) in tc))
    return edges


EDGES = _edges()


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "tminus"


def _allowed(target: str, entries: frozenset[str] | set[str]) -> bool:
    rel = target.removeprefix("tminus.")
    return ANY in entries or any(rel == e or rel.startswith(e + ".") for e in entries)


def _package_graph(*, with_known: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for e in EDGES:
        a, b = _package(e.src), _package(e.dst)
        if a == b:
            continue
        only_known = _allowed(e.dst, set(KNOWN.get(a, {}))) and not _allowed(
            e.dst, CONTRACTS[a] - {ANY}
        )
        if only_known and not with_known:
            continue
        graph[a].add(b)
    return graph


def test_graph_is_measured() -> None:
    """The parse sees lazy and TYPE_CHECKING imports (guards the measurement itself)."""
    srcs = {(e.src, e.dst, e.type_only) for e in EDGES}
    # a lazy import inside a function
    assert ("tminus.steps._data", "tminus.backups.registry", False) in srcs
    # a TYPE_CHECKING-only import
    assert any(e.type_only for e in EDGES)
    assert {_package(e.src) for e in EDGES} >= {"engine", "steps", "sources", "cli"}


def test_every_package_has_a_contract() -> None:
    packages = {_package(_module_name(p)) for p in SRC.rglob("*.py")}
    assert packages == set(CONTRACTS), packages ^ set(CONTRACTS)


def test_plan_imports_nothing_else_of_tminus() -> None:
    bad = sorted(
        (e.src, e.dst) for e in EDGES if _package(e.src) == "plan" and _package(e.dst) != "plan"
    )
    assert bad == []


def test_every_package_imports_only_its_contract() -> None:
    bad = []
    for e in EDGES:
        a = _package(e.src)
        if _package(e.dst) == a:
            continue
        if not _allowed(e.dst, CONTRACTS[a] | set(KNOWN.get(a, {}))):
            kind = "TYPE_CHECKING" if e.type_only else "runtime"
            bad.append(f"{e.src} → {e.dst} ({kind})")
    assert bad == [], "imports outside the contract:\n" + "\n".join(sorted(set(bad)))


def test_known_exceptions_are_still_real() -> None:
    """A fixed exception must be removed from KNOWN (and from the doc)."""
    stale = [
        f"{a} → {t}"
        for a, targets in KNOWN.items()
        for t in targets
        if not any(_package(e.src) == a and _allowed(e.dst, {t}) for e in EDGES)
    ]
    assert stale == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's node list, found by DFS from each node (the graph is small)."""
    found: set[tuple[str, ...]] = set()

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                i = path.index(min(path))
                found.add(tuple(path[i:] + path[:i]))
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for n in sorted(graph):
        walk(n, n, [n])
    return [list(c) for c in sorted(found)]


def test_no_cycles_between_packages() -> None:
    assert _cycles(_package_graph(with_known=False)) == []


def test_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_engine_reaches_plugins_only_through_bases_and_registries() -> None:
    bad = sorted(
        {
            e.dst
            for e in EDGES
            if _package(e.src) == "engine"
            and _package(e.dst) in FAMILIES
            and e.dst.rpartition(".")[2] not in ("base", "registry")
            and not _allowed(e.dst, set(KNOWN.get("engine", {})))
        }
    )
    assert bad == []


def test_plugin_bases_import_no_driver() -> None:
    """A family's ``base`` is its interface; drivers are found through a registry, lazily."""
    bad = sorted(
        (e.src, e.dst)
        for e in EDGES
        if e.src.split(".")[1:] in ([f, "base"] for f in FAMILIES)
        and _package(e.dst) == _package(e.src)
        and not e.type_only
        and e.dst.rpartition(".")[2] not in ("bucketing",)  # flags.base: the shared hash
    )
    assert bad == []


def _doc_table() -> dict[str, tuple[set[str], set[str]]]:
    """package → (contract, known) read from the doc's ``| package | role | imports |`` table."""
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `tminus\.(\w+)` \|.*\| (.*) \|$", line)
        if not m:
            continue
        text = m.group(2)
        while re.search(r"\([^()]*\)", text):  # explanations may name modules too
            text = re.sub(r"\([^()]*\)", "", text)
        allowed, _, known = text.partition("known:")
        names = set(re.findall(r"`([\w.]+)`", allowed))
        if "anything" in allowed:
            names.add(ANY)
        rows[m.group(1)] = (names, set(re.findall(r"`([\w.]+)`", known)))
    return rows


def test_doc_import_table_matches_contracts() -> None:
    doc = _doc_table()
    want = {
        pkg: (set(CONTRACTS[pkg]), set(KNOWN.get(pkg, {})))
        for pkg in CONTRACTS
        if pkg not in DOC_OMITS
    }
    assert doc == want


def test_family_protocols_are_small() -> None:
    """Each Protocol of a family's ``base`` declares at most 6 members of its own (a bigger
    interface is split into named roles: ``StepKind`` = what a kind does + its
    ``Capabilities``; ``Router`` + ``CookieRoutes``; ``FlagStore`` + ``FlagConveniences``;
    ``BackupDriver`` + ``TargetInspection``). Mutation: ``StepKind`` declaring two
    capabilities itself again (7 members) → fails."""
    big = []
    for family in FAMILIES:
        tree = ast.parse((SRC / family / "base.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id == "Protocol" for b in node.bases
            ):
                own = [
                    m
                    for m in node.body
                    if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef, ast.AnnAssign))
                ]
                if len(own) > 6:
                    big.append(f"{family}.base.{node.name}: {len(own)}")
    assert big == []


#: Issue #14 item 5, "modules fit in a head".
MAX_MODULE_LINES = 500
MAX_MEDIAN_LINES = 200


def test_modules_fit_in_a_head() -> None:
    """No module of ``src/tminus`` over :data:`MAX_MODULE_LINES` lines, and the median under
    :data:`MAX_MEDIAN_LINES` (issue #14, item 5). A module that grows past the limit is split
    by what it does (as ``engine/notify`` became ``notify``, ``delivery`` and ``required``).

    Mutation tried: 120 blank-free lines appended to ``serve/auth.py`` (408 lines) → fails,
    naming the module and its length."""
    sizes = {
        str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines())
        for p in SRC.rglob("*.py")
    }
    over = {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}"
    ordered = sorted(sizes.values())
    median = ordered[len(ordered) // 2]
    assert median < MAX_MEDIAN_LINES, f"median module length {median} lines"
