"""Load a plan file: YAML with positions → pydantic model, every error with file:line:column.

YAML is read with YAML 1.2 scalar rules: only ``true``/``false`` are booleans (``on``, ``yes``
and ``no`` stay strings), and ``1:30`` or ``2026-01-29`` stay strings for the model to parse.
Duplicate keys are errors.

Hostile input is bounded: a file over :data:`MAX_BYTES` is refused after reading at most one
byte more; nesting deeper than :data:`MAX_DEPTH` collections is refused as soon as the parser
reaches it (before the quadratic cost of deep flow nesting is paid); aliases may expand the
document to at most :data:`MAX_NODES` values, :data:`MAX_ALIAS_VALUES` of them added by aliases.
Tags other than YAML's core ones (``!!str``, ``!!int``, ...) and a merge key (``<<``) whose value
is not a mapping are errors with their position.
"""

from __future__ import annotations

import gc
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from tminus.plan.model import Plan
from tminus.plan.problems import Loc, Problem, did_you_mean

__all__ = ["LoadResult", "Source", "load_plan", "load_plan_text", "parse_yaml"]


#: Largest plan file read, in bytes (5 MiB); a longer one is refused unread past this.
MAX_BYTES = 5 * 1024 * 1024
#: Deepest nesting of mappings and lists (a plan needs about a dozen levels).
MAX_DEPTH = 64
#: Most values a plan may expand to; stops alias bombs ("billion laughs") early.
MAX_NODES = 500_000
#: Most values aliases may add to a plan (each use of an alias adds the values it stands for).
MAX_ALIAS_VALUES = 100_000

_CORE = "tag:yaml.org,2002:"
#: Tags a plan may carry: those of YAML's core schema (and the merge key's).
_ALLOWED_TAGS = frozenset(
    _CORE + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "merge")
)


class _Refused(Exception):
    """Input tminus refuses to read further: a limit or an unsupported YAML construct."""

    def __init__(self, message: str, mark: Any = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint
        self.line = mark.line + 1 if mark is not None else 1
        self.column = mark.column + 1 if mark is not None else 1

    def problem(self, path: str) -> Problem:
        return Problem(
            "error",
            "yaml",
            f"invalid YAML: {self.message}",
            file=path,
            line=self.line,
            column=self.column,
            hint=self.hint,
        )


def _too_deep(mark: Any) -> _Refused:
    return _Refused(
        f"the document is nested too deeply (more than {MAX_DEPTH} levels)",
        mark,
        "a plan needs a few levels of nesting, not dozens",
    )


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalar resolution and a nesting limit."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent):
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    raise _too_deep(self.peek_event().start_mark)  # type: ignore[no-untyped-call]
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {}
for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN"),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_regexp), list(_first))
# An empty scalar (``key:`` with nothing after it) is null, as in YAML 1.2.
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^$"), [""])
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])

_FastLoader: Any = None
if getattr(yaml, "__with_libyaml__", False):

    class _CLoader(yaml.CSafeLoader):
        """libyaml's parser with the same YAML 1.2 resolvers, for plans that parse cleanly."""

    _CLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
    _FastLoader = _CLoader


@dataclass
class Source:
    """The text of a plan and where each value and key sits in it (1-based line, column)."""

    path: str
    text: str
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def position(self, loc: Loc, *, key: bool = False) -> tuple[int, int] | None:
        """Position of the deepest node of ``loc`` that exists (its key if ``key``)."""
        loc = tuple(loc)
        while True:
            if key and loc in self.keys:
                return self.keys[loc]
            if loc in self.values:
                return self.values[loc]
            if not loc:
                return None
            loc = loc[:-1]
            key = False

    def locate(self, problem: Problem, *, key: bool = False) -> Problem:
        problem.file = self.path
        pos = self.position(problem.path, key=key)
        if pos:
            problem.line, problem.column = pos
        return problem


@dataclass
class LoadResult:
    plan: Plan | None
    problems: list[Problem]
    source: Source
    data: Any = None

    @property
    def ok(self) -> bool:
        return self.plan is not None and not any(p.severity == "error" for p in self.problems)


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: tuple[int, int], second: tuple[int, int], loc: Loc) -> None:
        super().__init__(key)
        self.key, self.first, self.second, self.loc = key, first, second, loc


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


class _Builder:
    """Turns a composed YAML node tree into plain data, recording positions in ``src``.

    Limits are enforced as it goes: nesting depth, values in all, and values added by aliases
    — an alias of a collection built before adds that collection's size to the count *before*
    it is built again, so an alias bomb is refused having built at most the limit."""

    def __init__(self, src: Source, loader: Any) -> None:
        self.src, self.loader = src, loader
        self.nodes = 0
        self.added = 0  # values added by aliases
        self.depth = 0
        self.active: set[int] = set()
        self.sizes: dict[int, int] = {}  # collections built once: values in each

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.nodes += 1
        if node.tag not in _ALLOWED_TAGS:
            raise _Refused(
                f"the tag '{_tag_name(node.tag)}' is not supported in a plan",
                node.start_mark,
                "remove the tag; a plan uses plain YAML values (quote a value to make it a string)",
            )
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if self.nodes > MAX_NODES:
                raise self._too_many(node)
            return _build(node, loc, self.src, self)
        key = id(node)
        if key in self.active:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "this anchored value contains an alias to itself",
                node.start_mark,
            )
        again = self.sizes.get(key)
        if again is not None:  # an alias: count what it adds before building it again
            self.added += again
            if self.added > MAX_ALIAS_VALUES:
                raise _Refused(
                    f"aliases add more than {MAX_ALIAS_VALUES} values to the document",
                    node.start_mark,
                    "an alias repeats all of its anchored value; use fewer or smaller ones",
                )
            if self.nodes + again > MAX_NODES:
                raise self._too_many(node)
        if self.nodes > MAX_NODES:
            raise self._too_many(node)
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _too_deep(node.start_mark)
        self.active.add(key)
        before = self.nodes
        try:
            return _build(node, loc, self.src, self)
        finally:
            self.active.discard(key)
            self.depth -= 1
            self.sizes.setdefault(key, self.nodes - before + 1)

    @staticmethod
    def _too_many(node: yaml.Node) -> _Refused:
        return _Refused(
            f"the document expands to more than {MAX_NODES} values (aliases repeated?)",
            node.start_mark,
            "a plan has at most a few thousand values; check the aliases (*name) it uses",
        )

    def construct(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # e.g. `!!int abc` raises ValueError inside PyYAML
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value as {node.tag}: {exc}", node.start_mark
            ) from None


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _build(node: yaml.Node, loc: Loc, src: Source, builder: _Builder) -> Any:
    src.values.setdefault(loc, _pos(node))
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        merge_tag = "tag:yaml.org,2002:merge"
        explicit = [(k, v) for k, v in node.value if k.tag != merge_tag]
        taken = {k.value for k, _ in explicit if isinstance(k, yaml.ScalarNode)}
        pairs: list[tuple[yaml.Node, yaml.Node]] = []
        for knode, vnode in node.value:
            if knode.tag != merge_tag:
                continue
            sources = vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]
            for m in sources:
                if not isinstance(m, yaml.MappingNode):
                    raise _Refused(
                        "a merge key ('<<') takes a mapping or a list of mappings, not "
                        + ("a list" if isinstance(m, yaml.SequenceNode) else "a single value"),
                        m.start_mark,
                        "write '<<: *name' with an anchored mapping (&name), or remove the '<<'",
                    )
                if m.tag not in _ALLOWED_TAGS:
                    raise _Refused(
                        f"the tag '{_tag_name(m.tag)}' is not supported in a plan", m.start_mark
                    )
                for mk, mv in m.value:
                    if isinstance(mk, yaml.ScalarNode) and mk.value not in taken:
                        taken.add(mk.value)
                        pairs.append((mk, mv))
        pairs.extend(explicit)
        for knode, vnode in pairs:
            key = (
                str(knode.value)
                if isinstance(knode, yaml.ScalarNode)
                else str(builder.construct(knode))
            )
            if key in out:
                first = src.keys.get((*loc, key), _pos(knode))
                raise _DuplicateKey(key, first, _pos(knode), (*loc, key))
            src.keys[(*loc, key)] = _pos(knode)
            out[key] = builder.build(vnode, (*loc, key))
        return out
    if isinstance(node, yaml.SequenceNode):
        return [builder.build(item, (*loc, i)) for i, item in enumerate(node.value)]
    return builder.construct(node)


def _parse_fast(text: str, path: str) -> tuple[Any, Source] | None:
    """Parse with libyaml when it is there (several times faster on large plans). Any problem
    gives None, and the pure-Python parser below reports it with its precise messages."""
    if _FastLoader is None:
        return None
    src = Source(path=path, text=text)
    try:
        loader = _FastLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            data = _Builder(src, loader).build(node, ())
        finally:
            loader.dispose()
    except _Refused:
        raise  # refused for good: the careful parser would only take longer to say so
    except Exception:  # any trouble: the careful parser decides what to say
        return None
    return data, src


def _check_flow_depth(text: str) -> None:
    """Refuse flow nesting (``[[[…``) deeper than :data:`MAX_DEPTH` from the parser's events,
    stopping at the first level too deep. Scanning deep flow nesting costs time quadratic in
    the depth (20,000 levels: seconds), and the composer would pay it before any check of its
    own. A text with few brackets cannot nest that deep and is not scanned twice."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    loader = (_FastLoader or _Loader)(text)
    depth = 0
    try:
        while True:
            event = loader.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep(event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # the parse proper reports it
    finally:
        loader.dispose()


def _too_large(path: str, size: str) -> Problem:
    return Problem(
        "error",
        "too-large",
        f"the plan is larger than {MAX_BYTES // (1024 * 1024)} MiB ({size}); tminus reads "
        "plans up to that size",
        file=path,
        line=1,
        column=1,
        hint="a plan is a few hundred lines; move data to files the steps read",
    )


def parse_yaml(text: str, path: str = "<plan>") -> tuple[Any, Source, list[Problem]]:
    """Parse YAML into plain data plus a :class:`Source` of positions; problems on failure.

    Bounded (see the module's docstring): hostile input is refused, not parsed at length."""
    if len(text) > MAX_BYTES:
        return None, Source(path=path, text=""), [_too_large(path, f"{len(text)} characters")]
    # The parse makes many small objects and no cycles: the cyclic GC only costs time here
    # (3x on a large plan).
    collecting = gc.isenabled()
    gc.disable()
    try:
        _check_flow_depth(text)
        return _parse_yaml(text, path)
    except _Refused as exc:
        return None, Source(path=path, text=text), [exc.problem(path)]
    finally:
        if collecting:
            gc.enable()


def _parse_yaml(text: str, path: str) -> tuple[Any, Source, list[Problem]]:
    fast = _parse_fast(text, path)
    if fast is not None:
        return fast[0], fast[1], []
    src = Source(path=path, text=text)
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (NUL, a lone surrogate, ...): report where it is.
        pos = max(0, min(exc.position, len(text)))
        line = text.count("\n", 0, pos) + 1
        column = pos - text.rfind("\n", 0, pos)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return (
            None,
            src,
            [
                Problem(
                    "error",
                    "yaml",
                    f"invalid YAML: character U+{char:04X} is not allowed in a plan",
                    file=path,
                    line=line,
                    column=column,
                    hint="remove the control character, or write it as an escape in a "
                    'double-quoted string ("\\x00")',
                )
            ],
        )
    try:
        node = loader.get_single_node()
        if node is None:
            return (
                None,
                src,
                [
                    Problem(
                        "error",
                        "empty",
                        "the plan is empty",
                        file=path,
                        line=1,
                        column=1,
                        hint="a plan needs at least 'name' and 'phases'",
                    )
                ],
            )
        data = _Builder(src, loader).build(node, ())
    except _DuplicateKey as dup:
        p = Problem(
            "error",
            "duplicate-key",
            f"duplicate key '{dup.key}' (first defined at line {dup.first[0]})",
            path=dup.loc,
            hint="each key may appear once per mapping; merge or rename one of them",
            file=path,
            line=dup.second[0],
            column=dup.second[1],
        )
        return None, src, [p]
    except RecursionError:
        return (
            None,
            src,
            [
                Problem(
                    "error",
                    "yaml",
                    "invalid YAML: the document is nested too deeply",
                    file=path,
                    line=1,
                    column=1,
                    hint="a plan needs a few levels of nesting, not hundreds",
                )
            ],
        )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = (exc.problem or str(exc)).strip()
        if exc.context:
            msg = f"{msg} ({exc.context.strip()})"
        hint = "check indentation and quoting; a value with ': ' or '#' needs quotes"
        if "\t" in text and ("tab" in msg.lower() or "'\\t'" in msg):
            hint = "YAML does not allow tabs for indentation; use spaces"
        return (
            None,
            src,
            [
                Problem(
                    "error",
                    "yaml",
                    f"invalid YAML: {msg}",
                    file=path,
                    line=(mark.line + 1) if mark else 1,
                    column=(mark.column + 1) if mark else 1,
                    hint=hint,
                )
            ],
        )
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        p = Problem("error", "yaml", f"invalid YAML: {exc}", file=path, line=1, column=1)
        return None, src, [p]
    finally:
        loader.dispose()
    return data, src, []


# --- pydantic errors → problems -------------------------------------------------------------

#: Elements pydantic puts in an error location to name the member of a smart union.
_SCALAR_LABELS = frozenset({"str", "int", "float", "bool", "none", "bytes", "timedelta"})
_LABEL = re.compile(r"^[a-z][a-z_-]*\[")


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    if isinstance(tp, list):  # a union narrowed by _walk
        return [m for arg in tp for m in _union_members(arg)]
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            out.extend(_union_members(arg))
        return out
    return [tp]


def _is_model(tp: Any) -> bool:
    return (
        isinstance(tp, type)
        and typing.get_origin(tp) is None
        and not isinstance(tp, types.GenericAlias)
        and issubclass(tp, BaseModel)
    )


def _tag_of(model: Any) -> set[str]:
    tags: set[str] = set()
    if not _is_model(model):
        return tags
    for fname in ("kind", "source"):
        f = model.model_fields.get(fname)
        if f is not None and typing.get_origin(f.annotation) is typing.Literal:
            tags.update(str(a) for a in typing.get_args(f.annotation))
    return tags


_NOT_A_LABEL = object()


def _choose(members: list[Any], elem: str) -> Any:
    """The union member that the location element ``elem`` selects, ``None`` if it selects
    one whose type is unknown, or ``_NOT_A_LABEL`` when ``elem`` is an ordinary key."""
    tagged = [m for m in members if elem in _tag_of(m)]
    if tagged:
        return tagged[0]
    if elem == "use":
        uses = [m for m in members if _is_model(m) and "use" in m.model_fields]
        if uses:
            return uses[0]
    if elem == "check":
        rest = [m for m in members if not (_is_model(m) and "use" in m.model_fields)]
        if len(rest) < len(members):
            return rest
    if elem in _SCALAR_LABELS:
        wanted = {"str": str, "int": int, "float": float, "bool": bool}.get(elem)
        return wanted if wanted in members else None
    if _LABEL.match(elem):
        origin = {"list": list, "dict": dict, "literal": typing.Literal}.get(elem.split("[")[0])
        picked = [m for m in members if origin is not None and typing.get_origin(m) is origin]
        return picked[0] if picked else None
    return _NOT_A_LABEL


@dataclass
class _Where:
    """Where a pydantic error location points: the part that exists in the data, the type
    expected there, whether it is about a mapping key, and whether a union label chose it."""

    path: Loc
    tp: Any
    key: bool = False
    labelled: bool = False


def _walk(loc: tuple[Any, ...], data: Any) -> _Where:
    """Follow a pydantic error location through the plan's types and the data together.

    Union tags (``kind``/``source`` values, ``use``/``check``) and smart-union labels
    (``int``, ``list[str]``, ``function-before[...]``) are consumed by the type walk, so a tag
    that happens to equal a key of the data (``kind: canary`` has a ``canary`` key) is not
    mistaken for it.
    """
    missing = object()
    tp: Any = Plan
    cur: Any = data
    path: list[str | int] = []
    where = _Where((), None)
    for elem in loc:
        members = [m for m in _union_members(tp) if m is not type(None)] if tp is not None else []
        if len(members) > 1 and isinstance(elem, str):
            chosen = _choose(members, elem)
            if chosen is not _NOT_A_LABEL:
                tp = chosen
                where.labelled = where.labelled or not (
                    elem in ("use", "check") or any(elem in _tag_of(m) for m in members)
                )
                continue
        if (
            tp is None
            and isinstance(elem, str)
            and elem != "[key]"
            and not (isinstance(cur, dict) and elem in cur)
        ):
            # Unknown type: skip what is not in the data (a label we do not know).
            continue
        if len(members) == 1:
            tp = members[0]
        if elem == "[key]":
            where.key = True
            tp = None
            continue
        if _is_model(tp):
            fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
            fields.update(tp.model_fields)
            tp = fields[elem].annotation if isinstance(elem, str) and elem in fields else None
        else:
            origin = typing.get_origin(tp)
            args = typing.get_args(tp)
            if origin is list and isinstance(elem, int) and args:
                tp = args[0]
            elif origin is dict and isinstance(elem, str) and len(args) == 2:
                tp = args[1]
            else:
                tp = None
        if isinstance(cur, dict) and isinstance(elem, str) and elem in cur:
            path.append(elem)
            cur = cur[elem]
        elif isinstance(cur, list) and isinstance(elem, int) and 0 <= elem < len(cur):
            path.append(elem)
            cur = cur[elem]
        else:
            cur = missing
    where.path = tuple(path)
    where.tp = tp
    return where


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that the pydantic error location ``loc`` points into."""
    models = [m for m in _union_members(_walk(loc, None).tp) if _is_model(m)]
    return models[0] if len(models) == 1 else None


def _data_at(data: Any, path: Loc) -> Any:
    for elem in path:
        data = data[elem]  # the path was built from the data, so every step exists
    return data


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_UNION_WHAT = {
    "routers": "router kind",
    "flag_stores": "flag store kind",
    "metrics": "metrics source kind",
}


def _tag_problem(
    etype: str, loc: tuple[Any, ...], ctx: dict[str, Any], data: Any, where: _Where
) -> tuple[str, str, str | None, Loc]:
    """code, message, hint and path of an unusable ``kind``/``source`` tag."""
    disc = str(ctx.get("discriminator", "kind")).strip("'")
    members = [m for m in _union_members(where.tp) if _is_model(m)]
    expected: list[str] = []
    for m in members:
        f = m.model_fields.get(disc)
        if f is not None and typing.get_origin(f.annotation) is typing.Literal:
            expected.extend(str(a) for a in typing.get_args(f.annotation) if a not in expected)
    if not expected:
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        expected = [t for t in tags if t]
    from tminus.plan.checks import CheckBase
    from tminus.plan.steps import StepBase

    if members and all(issubclass(m, StepBase) for m in members):
        what = "step kind"
    elif members and all(issubclass(m, CheckBase) for m in members):
        what = "check source"
    else:
        section = next((e for e in reversed(loc) if e in _UNION_WHAT), None)
        what = _UNION_WHAT.get(str(section), disc)
    known = ", ".join(expected)
    if etype == "union_tag_not_found":
        return (
            "missing-key",
            f"missing required key '{disc}'",
            f"'{disc}' is one of: {known}",
            (where.path),
        )
    tag = str(ctx.get("tag", ""))
    dym = did_you_mean(tag, expected)
    hint = f"{dym} (known: {known})" if dym else f"known: {known}"
    path = where.path
    here = _data_at(data, path)
    if isinstance(here, dict) and disc in here:
        path = (*path, disc)
    return f"unknown-{disc}", f"unknown {what} '{tag}'", hint, path


def _problem_from_error(err: Any, data: Any, src: Source) -> tuple[Problem, _Where]:
    loc = tuple(err["loc"])
    etype = err["type"]
    ctx = err.get("ctx") or {}
    where = _walk(loc, data)
    path = where.path
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    hint: str | None = None
    on_key = where.key
    code = "invalid"
    if etype == "extra_forbidden":
        key = str(loc[-1])
        code = "unknown-key"
        model = _model_at(loc[:-1])
        allowed = _field_names(model) if model else []
        msg = f"unknown key '{key}'"
        hint = did_you_mean(key, allowed)
        if hint is None and allowed:
            hint = "allowed keys here: " + ", ".join(allowed)
        on_key = True
    elif etype == "missing":
        key = str(loc[-1])
        code = "missing-key"
        msg = f"missing required key '{key}'"
        model = _model_at(loc[:-1])
        if model is not None:
            f = model.model_fields.get(key)
            if f is None:
                f = next((g for g in model.model_fields.values() if g.alias == key), None)
            if f is not None and f.description:
                hint = f"'{key}': {f.description}"
    elif etype in ("union_tag_invalid", "union_tag_not_found"):
        code, msg, hint, path = _tag_problem(etype, loc, ctx, data, where)
    elif etype == "check_ref":
        code = "invalid-check"
    elif etype == "literal_error":
        wanted = str(ctx.get("expected", ""))
        msg = f"{_describe(err.get('input'))} is not allowed here; expected {wanted}"
        choices = [e.strip().strip("'") for e in wanted.replace(" or ", ",").split(",")]
        if isinstance(err.get("input"), str):
            hint = did_you_mean(err["input"], [c for c in choices if c])
    elif etype in ("model_type", "model_attributes_type", "dict_type"):
        code = "wrong-type"
        msg = f"expected a mapping of keys (got {_describe(err.get('input'))})"
        model = _model_at(loc)
        if model is not None:
            hint = "keys here: " + ", ".join(_field_names(model))
    elif etype.endswith("_type") or etype.endswith("_parsing"):
        code = "wrong-type"
        msg = f"{msg} (got {_describe(err.get('input'))})"
    elif etype == "string_pattern_mismatch":
        msg = f"{_describe(err.get('input'))} is not a valid name"
        hint = "names start with a letter or _ and use letters, digits, _, - and ."
    problem = Problem("error", code, msg, path=path, hint=hint)
    return src.locate(problem, key=on_key), where


_VALID_WORD = re.compile(r"valid (\w+)")


def _merge_union(group: list[tuple[Problem, Any]]) -> Problem:
    """One problem for the errors of every member of a smart union (``int | list[int]``)."""
    first = group[0][0]
    if all(p.code == "wrong-type" for p, _ in group):
        words: list[str] = []
        for _, err in group:
            m = _VALID_WORD.search(str(err["msg"]))
            if m and m.group(1) not in words:
                words.append(m.group(1))
        if words:
            named = [("an " if w[0] in "aeiou" else "a ") + w for w in words]
            listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1]
            first.message = f"expected {listed} (got {_describe(group[0][1].get('input'))})"
            return first
    messages: list[str] = []
    for p, _ in group:
        if p.message not in messages:
            messages.append(p.message)
    first.message = "; or: ".join(messages)
    first.code = "invalid" if len({p.code for p, _ in group}) > 1 else first.code
    first.hint = next((p.hint for p, _ in group if p.hint), None)
    return first


def _problems_from_validation(exc: ValidationError, data: Any, src: Source) -> list[Problem]:
    errors = exc.errors(include_url=False)
    found = [(*_problem_from_error(e, data, src), e) for e in errors]
    # Errors of the members of one smart union (`int | list[int]`) become one problem.
    slots: list[list[tuple[Problem, Any]]] = []
    groups: dict[tuple[Any, ...], list[tuple[Problem, Any]]] = {}
    for problem, where, err in found:
        if not where.labelled:
            slots.append([(problem, err)])
            continue
        group_key = (problem.path, where.key)
        if group_key not in groups:
            groups[group_key] = []
            slots.append(groups[group_key])
        groups[group_key].append((problem, err))
    merged = [_merge_union(slot) if len(slot) > 1 else slot[0][0] for slot in slots]
    # A discriminated union reports once per member when the tag is unusable; keep one.
    seen: set[tuple[Any, ...]] = set()
    out: list[Problem] = []
    for p in merged:
        k = (p.line, p.column, p.code, p.message)
        if k not in seen:
            seen.add(k)
            out.append(p)
    return out


def load_plan_text(text: str, path: str = "<plan>", *, semantic: bool = True) -> LoadResult:
    """Parse and validate plan text. Never raises for a bad plan: problems are returned."""
    data, src, problems = parse_yaml(text, path)
    if problems:
        return LoadResult(None, problems, src, data)
    if not isinstance(data, dict):
        p = Problem(
            "error",
            "wrong-type",
            "a plan is a mapping of keys (name, phases, …)",
            hint="start the file with 'name: my-deploy'",
        )
        return LoadResult(None, [src.locate(p)], src, data)
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        return LoadResult(None, _problems_from_validation(exc, data, src), src, data)
    if semantic:
        from tminus.plan.validate import validate_plan

        problems = [src.locate(p, key=p.key is not None) for p in validate_plan(plan, data)]
    return LoadResult(plan, problems, src, data)


def load_plan(path: str | Path, *, semantic: bool = True) -> LoadResult:
    """Load a plan file. Unreadable files become a problem, not an exception."""
    p = Path(path)
    try:
        # At most one byte past the limit: /dev/zero, a FIFO or a huge file cannot fill memory.
        with p.open("rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        src = Source(path=str(path), text="")
        reason = exc.strerror or str(exc)
        hint = "pass a plan file, not a directory" if p.is_dir() else None
        return LoadResult(
            None,
            [Problem("error", "io", f"cannot read plan: {reason}", file=str(path), hint=hint)],
            src,
        )
    if len(raw) > MAX_BYTES:
        src = Source(path=str(path), text="")
        return LoadResult(None, [_too_large(str(path), f"more than {MAX_BYTES} bytes")], src)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        src = Source(path=str(path), text="")
        line = raw[: exc.start].count(b"\n") + 1
        return LoadResult(
            None,
            [Problem("error", "encoding", "the plan is not UTF-8 text", file=str(path), line=line)],
            src,
        )
    return load_plan_text(text, str(path), semantic=semantic)
