"""Load a plan file: YAML with positions → pydantic model, every error with file:line:column.

YAML is read with YAML 1.2 scalar rules: only ``true``/``false`` are booleans (``on``, ``yes``
and ``no`` stay strings), and ``1:30`` or ``2026-01-29`` stay strings for the model to parse.
Duplicate keys are errors.
"""

from __future__ import annotations

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


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalar resolution."""


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
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", "~nN\x00"),
):
    _Loader.add_implicit_resolver(_tag, re.compile(_regexp), list(_first) if _first else None)
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


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
    def __init__(self, key: str, first: tuple[int, int], loc: Loc) -> None:
        super().__init__(key)
        self.key, self.first, self.loc = key, first, loc


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _build(node: yaml.Node, loc: Loc, src: Source, loader: _Loader) -> Any:
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
                    continue
                for mk, mv in m.value:
                    if isinstance(mk, yaml.ScalarNode) and mk.value not in taken:
                        taken.add(mk.value)
                        pairs.append((mk, mv))
        pairs.extend(explicit)
        for knode, vnode in pairs:
            key = (
                str(knode.value)
                if isinstance(knode, yaml.ScalarNode)
                else str(loader.construct_object(knode, deep=True))
            )
            if key in out:
                raise _DuplicateKey(key, src.keys.get((*loc, key), _pos(knode)), (*loc, key))
            src.keys[(*loc, key)] = _pos(knode)
            out[key] = _build(vnode, (*loc, key), src, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*loc, i), src, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, path: str = "<plan>") -> tuple[Any, Source, list[Problem]]:
    """Parse YAML into plain data plus a :class:`Source` of positions; problems on failure."""
    src = Source(path=path, text=text)
    loader = _Loader(text)
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
        data = _build(node, (), src, loader)
    except _DuplicateKey as dup:
        p = Problem(
            "error",
            "duplicate-key",
            f"duplicate key '{dup.key}' (first defined at line {dup.first[0]})",
            path=dup.loc,
            hint="each key may appear once per mapping; merge or rename one of them",
        )
        return None, src, [src.locate(p, key=True)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = (exc.problem or str(exc)).strip()
        if exc.context:
            msg = f"{msg} ({exc.context.strip()})"
        hint = "check indentation and quoting; a value with ': ' or '#' needs quotes"
        if "\t" in text and "tab" in msg.lower():
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
                    line=(mark.line + 1) if mark else None,
                    column=(mark.column + 1) if mark else None,
                    hint=hint,
                )
            ],
        )
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        return None, src, [Problem("error", "yaml", f"invalid YAML: {exc}", file=path)]
    finally:
        loader.dispose()
    return data, src, []


# --- pydantic errors → problems -------------------------------------------------------------


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Loc, list[Any]]:
    """Follow ``loc`` through ``data``; elements that are not in the data (union tags) are
    skipped. Returns the path that exists and the skipped elements."""
    path: list[str | int] = []
    skipped: list[Any] = []
    cur = data
    for elem in loc:
        if isinstance(cur, dict) and isinstance(elem, str) and elem in cur:
            path.append(elem)
            cur = cur[elem]
        elif isinstance(cur, list) and isinstance(elem, int) and 0 <= elem < len(cur):
            path.append(elem)
            cur = cur[elem]
        else:
            skipped.append(elem)
    return tuple(path), skipped


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            out.extend(_union_members(arg))
        return out
    return [tp]


def _tag_of(model: type[BaseModel]) -> set[str]:
    tags: set[str] = set()
    for fname in ("kind", "source"):
        f = model.model_fields.get(fname)
        if f is not None and typing.get_origin(f.annotation) is typing.Literal:
            tags.update(str(a) for a in typing.get_args(f.annotation))
    return tags


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that the pydantic error location ``loc`` points into."""
    tp: Any = Plan
    for elem in loc:
        members = [m for m in _union_members(tp) if m is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if len(members) > 1:
            if isinstance(elem, str):
                tagged = [m for m in models if elem in _tag_of(m)]
                if tagged:
                    tp = tagged[0]
                    continue
                if elem == "use":
                    tp = next((m for m in models if "use" in m.model_fields), tp)
                    continue
                if elem == "check":
                    continue
            non_str = [m for m in members if m not in (str, int, float, bool)]
            tp = non_str[0] if len(non_str) == 1 else tp
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
            fields.update(tp.model_fields)
            if isinstance(elem, str) and elem in fields:
                tp = fields[elem].annotation
                continue
            return None
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is list and isinstance(elem, int):
            tp = args[0]
        elif origin is dict and isinstance(elem, str):
            tp = args[1]
        elif origin in (Union, types.UnionType):
            continue
        else:
            return None
    tp = _unwrap(tp)
    models = [m for m in _union_members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 else None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem_from_error(err: Any, data: Any, src: Source) -> Problem:
    loc = tuple(err["loc"])
    etype = err["type"]
    ctx = err.get("ctx") or {}
    path, _ = _data_path(data, loc)
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    hint: str | None = None
    on_key = False
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
            if f is not None and f.description:
                hint = f"'{key}': {f.description}"
    elif etype in ("union_tag_invalid", "union_tag_not_found"):
        disc = str(ctx.get("discriminator", "kind")).strip("'")
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        expected = [t for t in tags if t]
        if etype == "union_tag_not_found":
            code = "missing-key"
            msg = f"missing required key '{disc}'"
            hint = f"'{disc}' is one of: " + ", ".join(expected)
        else:
            tag = str(ctx.get("tag", ""))
            code = f"unknown-{disc}"
            what = {"kind": "step kind", "source": "check source"}.get(disc, disc)
            msg = f"unknown {what} '{tag}'"
            dym = did_you_mean(tag, expected)
            known = "known: " + ", ".join(expected)
            hint = f"{dym} ({known})" if dym else known
            if isinstance(data, dict):
                path = (*path, disc) if disc else path
    elif etype == "check_ref":
        code = "invalid-check"
    elif etype == "literal_error":
        wanted = str(ctx.get("expected", ""))
        msg = f"{_describe(err.get('input'))} is not allowed here; expected {wanted}"
        choices = [e.strip().strip("'") for e in wanted.replace(" or ", ",").split(",")]
        if isinstance(err.get("input"), str):
            hint = did_you_mean(err["input"], [c for c in choices if c])
    elif etype.endswith("_type") or etype.endswith("_parsing"):
        code = "wrong-type"
        msg = f"{msg} (got {_describe(err.get('input'))})"
    elif etype == "string_pattern_mismatch":
        msg = f"{_describe(err.get('input'))} is not a valid name"
        hint = "names start with a letter or _ and use letters, digits, _, - and ."
    problem = Problem("error", code, msg, path=path, hint=hint)
    return src.locate(problem, key=on_key)


def _problems_from_validation(exc: ValidationError, data: Any, src: Source) -> list[Problem]:
    problems = [_problem_from_error(e, data, src) for e in exc.errors(include_url=False)]
    # A discriminated union reports once per member when the tag is unusable; keep one.
    seen: set[tuple[Any, ...]] = set()
    out: list[Problem] = []
    for p in problems:
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
        raw = p.read_bytes()
    except OSError as exc:
        src = Source(path=str(path), text="")
        reason = exc.strerror or str(exc)
        return LoadResult(
            None, [Problem("error", "io", f"cannot read plan: {reason}", file=str(path))], src
        )
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
