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

The limits, the loaders and :class:`Source` are defined in :mod:`tminus.plan._yaml_rules`, and
pydantic's errors are worded in :mod:`tminus.plan._pydantic_problems`; the parse itself (the
builder, the libyaml fast path) stays here and reads the limits and ``_FastLoader`` as globals of
this module, where the tests patch them.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tminus.plan._pydantic_problems import _problems_from_validation
from tminus.plan._yaml_rules import (
    _ALLOWED_TAGS,
    Source,
    _DuplicateKey,
    _FastLoader,
    _Loader,
    _Refused,
    _tag_name,
    _too_deep,
    _too_large,
)
from tminus.plan._yaml_rules import MAX_ALIAS_VALUES as MAX_ALIAS_VALUES
from tminus.plan._yaml_rules import MAX_BYTES as MAX_BYTES
from tminus.plan._yaml_rules import MAX_DEPTH as MAX_DEPTH
from tminus.plan._yaml_rules import MAX_NODES as MAX_NODES
from tminus.plan.model import Plan
from tminus.plan.problems import Loc, Problem

__all__ = ["LoadResult", "Source", "load_plan", "load_plan_text", "parse_yaml"]


@dataclass
class LoadResult:
    plan: Plan | None
    problems: list[Problem]
    source: Source
    data: Any = None

    @property
    def ok(self) -> bool:
        return self.plan is not None and not any(p.severity == "error" for p in self.problems)


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
