"""Bind parameters for SQL written in plans: a value never changes a statement's structure.

A ``sql`` step's statement or a ``sql`` check's query may hold ``${…}`` references and
``:name`` placeholders of the step's ``params:``. A small lexer (string literals with ``''``
escapes, and on MySQL/MariaDB backslash escapes and ``"…"`` strings; ``"…"``/`` `…` ``
quoted identifiers; ``--``, ``#`` (MySQL) and ``/* */`` comments; PostgreSQL ``$tag$…$tag$``
bodies; ``::`` casts) finds where each reference sits:

* inside a string literal (``'${note}'``, ``'pre-${v}-post'``): the whole literal becomes one
  bound parameter, its value the literal's content with the values put in;
* inside a quoted identifier (``"${table}"``): the value must be an identifier (no NUL, no
  control character); the quote character is doubled;
* unquoted (``FROM ${table}``, ``LIMIT ${n}``): only an unsigned number or a plain (dotted)
  identifier is written into the text; anything else is refused before anything runs;
* inside a comment, a dollar-quoted body, a prefixed literal (``E'…'``, ``N'…'``) or an
  SQLite ``[…]`` identifier: refused (``tminus check`` says so first).

A statement with bound values runs alone (one statement per ``execute``) with the values
passed to the driver (psycopg binds them on the server; PyMySQL and sqlite3 escape or bind
them themselves). A statement without references or placeholders runs exactly as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal

from tminus.plan._sql_lexer import (
    Bad,
    Dialect,
    Placeholder,
    Quoted,
    Statement,
    Text,
    dialect_of,
    lex,
)
from tminus.plan._sql_lexer import Bare as Bare
from tminus.plan._sql_params import PARAM_TYPES, convert_param
from tminus.plan.interpolate import Reference

__all__ = [
    "PARAM_TYPES",
    "Bound",
    "Dialect",
    "SqlBindError",
    "Statement",
    "bind_statements",
    "convert_param",
    "describe_sql",
    "dialect_of",
    "lex",
    "params_hint",
    "prepare",
    "resolve_params",
]

#: What an unquoted reference may be: an unsigned number or a plain, optionally dotted, name.
SAFE_NUMBER = re.compile(r"\d+(?:\.\d+)?")
SAFE_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)*")


class SqlBindError(ValueError):
    """A reference or parameter that cannot be put into a statement safely."""

    def __init__(self, message: str, hint: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.hint = hint
        self.offset = offset


def params_hint(name: str) -> str:
    """How to pass a value as a parameter instead of a reference."""
    return f"write it as a parameter: params: {{{name}: '${{{name}}}'}} and :{name} in the SQL"


# --- binding ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """A statement ready to run: SQL parts and bind markers, and the bound values."""

    parts: tuple[tuple[Literal["sql", "bind"], str], ...]
    values: dict[str, Any]

    def render(self, style: Literal["pyformat", "named"]) -> str:
        """The SQL for a DB-API driver: ``%(name)s`` (psycopg, PyMySQL; ``%`` doubled) or
        ``:name`` (sqlite3). Without values, the text as written."""
        if not self.values:
            return "".join(s for _, s in self.parts)
        out: list[str] = []
        for kind, s in self.parts:
            if kind == "bind":
                out.append(f"%({s})s" if style == "pyformat" else f":{s}")
            else:
                out.append(s.replace("%", "%%") if style == "pyformat" else s)
        return "".join(out)

    def display(self) -> str:
        """The statement with ``:name`` markers, then each bound value (for a dry run)."""
        sql = "".join(f":{s}" if kind == "bind" else s for kind, s in self.parts).strip()
        if not self.values:
            return sql
        shown = ", ".join(f"{k}={_show(v)}" for k, v in self.values.items())
        return f"{sql} [{shown}]"


def _show(value: Any) -> str:
    if isinstance(value, date | Decimal):
        return repr(str(value))
    return repr(value)


def _check_text(value: str, what: str, offset: int | None) -> None:
    if "\0" in value:
        raise SqlBindError(
            f"{what} contains a NUL character, which SQL text cannot hold",
            hint="remove the NUL (\\0) from the value",
            offset=offset,
        )


def _ident_value(value: str, ref: Reference, offset: int) -> None:
    _check_text(value, f"the value of {ref.text}", offset)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise SqlBindError(
            f"the value of {ref.text} in a quoted identifier has a control character",
            hint="an identifier (a table or database name) has no control characters",
            offset=offset,
        )
    # A ' or \ never: a server that reads the text otherwise than the lexer (PostgreSQL with
    # standard_conforming_strings off) must not be led out of a literal by the value.
    if "'" in value or "\\" in value:
        raise SqlBindError(
            f"the value of {ref.text} in a quoted identifier has a ' or a backslash",
            hint="an identifier (a table or database name) has neither",
            offset=offset,
        )


def _refused(ref: Reference, value: str, offset: int) -> SqlBindError:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return SqlBindError(
        f"the value of {ref.text} ({shown!r}) is not a number or a plain identifier, and "
        "it is written unquoted in the SQL, where it would change the statement",
        hint=f"write '{ref.text}' to pass it as a string value, or "
        + params_hint(ref.name if SAFE_IDENT.fullmatch(ref.name) else "value"),
        offset=offset,
    )


def _bad(tok: Bad) -> SqlBindError:
    return SqlBindError(
        f"{tok.ref.text} is inside {tok.where}, where no value can be put safely",
        hint=params_hint(tok.ref.name if SAFE_IDENT.fullmatch(tok.ref.name) else "value"),
        offset=tok.offset,
    )


def _fresh(names: set[str], after: int) -> tuple[str, int]:
    """``_v1``, ``_v2``, …: the first name after ``_v<after>`` not taken by a param."""
    n = after + 1
    while f"_v{n}" in names:
        n += 1
    return f"_v{n}", n


def bind_statement(
    stmt: Statement, lookup: Callable[[Reference], str], params: Mapping[str, Any]
) -> Bound:
    """One statement's SQL parts and values; raises :class:`SqlBindError` (nothing runs)."""
    parts: list[tuple[Literal["sql", "bind"], str]] = []
    values: dict[str, Any] = {}
    names, seq = set(params), 0
    for tok in stmt.tokens:
        if isinstance(tok, Text):
            parts.append(("sql", tok.sql))
        elif isinstance(tok, Placeholder):
            if tok.name not in params:
                raise SqlBindError(
                    f":{tok.name} is not a parameter of this step",
                    hint="declare it under params:, e.g. params: {" + tok.name + ": VALUE}",
                    offset=tok.offset,
                )
            value = params[tok.name]
            if isinstance(value, str):
                _check_text(value, f"parameter {tok.name}", tok.offset)
            values[tok.name] = value
            parts.append(("bind", tok.name))
        elif isinstance(tok, Quoted):
            chunks: list[str] = []
            for p in tok.pieces:
                if isinstance(p, Reference):
                    v = lookup(p)
                    if tok.what == "ident":
                        _ident_value(v, p, tok.offset)
                    chunks.append(v)
                else:
                    chunks.append(p)
            value = "".join(chunks)
            if tok.what == "literal":
                _check_text(value, "a string with a reference", tok.offset)
                name, seq = _fresh(names, seq)
                values[name] = value
                parts.append(("bind", name))
            else:
                if not value:
                    raise SqlBindError("a quoted identifier is empty", offset=tok.offset)
                parts.append(
                    ("sql", tok.quote + value.replace(tok.quote, tok.quote * 2) + tok.quote)
                )
        elif isinstance(tok, Bare):
            v = lookup(tok.ref)
            if not (SAFE_NUMBER.fullmatch(v) or SAFE_IDENT.fullmatch(v)):
                raise _refused(tok.ref, v, tok.offset)
            parts.append(("sql", v))
        elif isinstance(tok, Bad):
            raise _bad(tok)
    return Bound(tuple(parts), values)


def needs_binding(stmt: Statement, params: Mapping[str, Any]) -> bool:
    """A statement goes through binding when it has references, or placeholders and the
    step declares params; any other runs exactly as written."""
    return stmt.has_references or bool(params and stmt.placeholders)


def bind_statements(
    text: str,
    dialect: Dialect,
    lookup: Callable[[Reference], str],
    params: Mapping[str, Any],
) -> list[Bound] | None:
    """The statements of ``text`` bound (one per execute), or None when ``text`` has no
    reference and no placeholder of ``params`` (then it runs as written)."""
    if "${" not in text and not (params and ":" in text):
        return None
    stmts = lex(text, dialect)
    if not any(needs_binding(s, params) for s in stmts):
        return None
    return [bind_statement(s, lookup, params) for s in stmts]


def resolve_params(params: Mapping[str, Any], resolve: Callable[[str], str]) -> dict[str, Any]:
    """``params:`` values: ``${…}`` resolved in strings, then converted to their ``type``.
    Raises :class:`SqlBindError` for a value that is not of its type."""
    out: dict[str, Any] = {}
    for name, spec in params.items():
        if hasattr(spec, "value") and hasattr(spec, "type"):
            raw, type_ = spec.value, spec.type
        else:
            raw, type_ = spec, None
        if isinstance(raw, str):
            raw = resolve(raw)
        try:
            out[name] = convert_param(raw, type_)
        except ValueError as exc:
            raise SqlBindError(
                f"parameter {name}: {exc}", hint=f"types: {', '.join(PARAM_TYPES)}"
            ) from None
    return out


def prepare(
    texts: list[str],
    kind: str,
    resolver: Any,
    params: Mapping[str, Any],
) -> list[str | Bound]:
    """What a sql step or check runs for ``texts``: each text without references or
    placeholders resolved as before (one string), any other split and bound (one
    :class:`Bound` per statement). ``resolver`` is a :class:`~tminus.plan.interpolate.Resolver`."""
    dialect = dialect_of(kind)
    values = resolve_params(params, resolver.resolve) if params else {}
    out: list[str | Bound] = []
    for text in texts:
        bound = bind_statements(text, dialect, resolver.lookup, values)
        if bound is None:
            out.append(resolver.resolve(text))
        else:
            out.extend(bound)
    return out


_DIALECT_NAMES: dict[Dialect, str] = {
    "postgres": "PostgreSQL",
    "mysql": "MySQL/MariaDB",
    "sqlite": "SQLite",
}


def describe_sql(
    text: str, resolver: Any, params: Mapping[str, Any], kind: str | None = None
) -> str:
    """``text`` as it would run, for a dry run: bound statements with ``:name`` markers and
    their values (the caller masks secrets); a refusal says so. Without ``kind`` every
    dialect's reading is shown where they differ."""
    kinds = [kind] if kind else ["postgres", "mysql", "sqlite"]
    shown: dict[str, list[str]] = {}
    for k in kinds:
        try:
            prepared = prepare([text], k, resolver, params)
            line = "; ".join(p.display() if isinstance(p, Bound) else p for p in prepared)
        except SqlBindError as exc:
            line = f"{text.strip()} (refused, nothing would run: {exc})"
        shown.setdefault(line, []).append(_DIALECT_NAMES[dialect_of(k)])
    if len(shown) == 1:
        return next(iter(shown))
    return "; ".join(f"(on {'/'.join(names)}) {line}" for line, names in shown.items())
