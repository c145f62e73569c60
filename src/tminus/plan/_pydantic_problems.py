"""pydantic's validation errors as plan problems: each error location is followed through the
plan's types and the data together to the key it is about (union tags and labels consumed),
worded with did-you-mean hints, and the errors of one smart union merged into one problem."""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel, ValidationError
from typing_extensions import TypeAliasType

from tminus.plan import checks, steps
from tminus.plan._yaml_rules import Source
from tminus.plan.model import Plan
from tminus.plan.problems import Loc, Problem, did_you_mean

#: Elements pydantic puts in an error location to name the member of a smart union.
_SCALAR_LABELS = frozenset({"str", "int", "float", "bool", "none", "bytes", "timedelta"})
_LABEL = re.compile(r"^[a-z][a-z_-]*\[")


def _unwrap(tp: Any) -> Any:
    """The type under ``Annotated[...]`` and named aliases (``Step``, ``CheckRef``, ``Name``)."""
    while True:
        if isinstance(tp, TypeAliasType):
            tp = tp.__value__
        elif typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        else:
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


#: The tag of each open union's plug-in member → its plug-in models.
_PLUGIN_UNIONS = {steps.PLUGIN_TAG: steps.PLUGINS, checks.PLUGIN_SOURCE_TAG: checks.PLUGINS}


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
        if elem in _PLUGIN_UNIONS and isinstance(cur, dict):  # a plug-in kind or source
            plugins = _PLUGIN_UNIONS[elem]
            tp = plugins.model(str(cur.get(plugins.field)))
            continue
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
            tp = _unwrap(tp)
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
    if disc.endswith("()"):  # an open union's callable discriminator: `kind` or `source`
        bases = [p for p in _PLUGIN_UNIONS.values() if any(m is p.base for m in members)]
        disc = bases[0].field if bases else "kind"
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
