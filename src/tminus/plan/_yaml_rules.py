"""The fixed parts of the plan YAML reader of :mod:`tminus.plan.loader`: the input limits, the
YAML 1.2 loaders (libyaml's when it is there), the tags a plan may carry, the refusals, and
:class:`Source`, where each value and key sits in the text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from tminus.plan.problems import Loc, Problem

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


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: tuple[int, int], second: tuple[int, int], loc: Loc) -> None:
        super().__init__(key)
        self.key, self.first, self.second, self.loc = key, first, second, loc


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


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
