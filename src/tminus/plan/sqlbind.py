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
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from tminus.plan.interpolate import Reference, references

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

Dialect = Literal["postgres", "mysql", "sqlite"]
PARAM_TYPES = ("str", "int", "float", "decimal", "bool", "date", "timestamp", "null")

_REF = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_IDENT_START = re.compile(r"[A-Za-z_]")
_PLACEHOLDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A run of characters none of which can start a literal, identifier, comment, dollar quote,
#: placeholder, statement end or reference.
_PLAIN = re.compile(r"[^'\"`\[\-#/$:;]+")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
#: What an unquoted reference may be: an unsigned number or a plain, optionally dotted, name.
SAFE_NUMBER = re.compile(r"\d+(?:\.\d+)?")
SAFE_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*(?:\.[A-Za-z_][A-Za-z0-9_$]*)*")
_MYSQL_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class SqlBindError(ValueError):
    """A reference or parameter that cannot be put into a statement safely."""

    def __init__(self, message: str, hint: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.hint = hint
        self.offset = offset


def dialect_of(kind: str) -> Dialect:
    """The lexer dialect of a database target kind."""
    if kind in ("mysql", "mariadb"):
        return "mysql"
    if kind == "sqlite":
        return "sqlite"
    return "postgres"


def params_hint(name: str) -> str:
    """How to pass a value as a parameter instead of a reference."""
    return f"write it as a parameter: params: {{{name}: '${{{name}}}'}} and :{name} in the SQL"


# --- tokens -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """SQL text kept as written (``$${`` already turned into ``${``)."""

    sql: str
    blank: bool = False  # whitespace or a comment only


@dataclass(frozen=True)
class Quoted:
    """A string literal or quoted identifier holding references: content pieces, decoded."""

    what: Literal["literal", "ident"]
    quote: str
    pieces: tuple[str | Reference, ...]
    offset: int


@dataclass(frozen=True)
class Bare:
    """An unquoted reference."""

    ref: Reference
    offset: int


@dataclass(frozen=True)
class Placeholder:
    name: str
    offset: int


@dataclass(frozen=True)
class Bad:
    """A reference where no value can go (a comment, a dollar-quoted body, …)."""

    ref: Reference
    offset: int
    where: str


@dataclass(frozen=True)
class Semi:
    offset: int


Token = Text | Quoted | Bare | Placeholder | Bad | Semi


@dataclass
class Statement:
    """One statement of a template, as tokens."""

    tokens: list[Token] = field(default_factory=list)

    @property
    def blank(self) -> bool:
        return all(isinstance(t, Text) and (t.blank or not t.sql.strip()) for t in self.tokens)

    @property
    def has_references(self) -> bool:
        return any(isinstance(t, Quoted | Bare | Bad) for t in self.tokens)

    @property
    def placeholders(self) -> list[Placeholder]:
        return [t for t in self.tokens if isinstance(t, Placeholder)]

    @property
    def bad(self) -> list[Bad]:
        return [t for t in self.tokens if isinstance(t, Bad)]


def _ref_at(text: str) -> dict[int, tuple[int, Reference | None]]:
    """Where each ``${…}`` starts: its end and reference (None for the ``$${`` escape)."""
    out: dict[int, tuple[int, Reference | None]] = {}
    for m in _REF.finditer(text):
        ref = None if m.group(0) == "$${" else references(m.group(0))[0]
        out[m.start()] = (m.end(), ref)
    return out


class _Lexer:
    def __init__(self, text: str, dialect: Dialect) -> None:
        self.text = text
        self.n = len(text)
        self.dialect = dialect
        self.refs = _ref_at(text)
        self.tokens: list[Token] = []
        self.buf: list[str] = []

    def flush(self) -> None:
        if self.buf:
            self.tokens.append(Text("".join(self.buf)))
            self.buf = []

    def _is_comment_start(self, i: int) -> int:
        """Length of the comment opener at ``i`` (0 if none): 1 for ``#``, 2 otherwise."""
        t = self.text
        if t.startswith("/*", i):
            return 2
        if t.startswith("--", i):
            if self.dialect != "mysql":
                return 2
            # MySQL: `--` starts a comment only when a space or control character follows
            if i + 2 >= self.n or t[i + 2].isspace() or ord(t[i + 2]) < 32:
                return 2
            return 0
        if t[i] == "#" and self.dialect == "mysql":
            return 1
        return 0

    def run(self) -> list[Token]:
        t, i = self.text, 0
        while i < self.n:
            hit = self.refs.get(i)
            if hit is not None:
                end, ref = hit
                if ref is None:
                    self.buf.append("${")
                else:
                    self.flush()
                    self.tokens.append(Bare(ref, i))
                i = end
                continue
            plain = _PLAIN.match(t, i)
            if plain is not None:  # nothing that starts a token: copy the run at once
                self.buf.append(plain.group(0))
                i = plain.end()
                continue
            c = t[i]
            prev = t[i - 1] if i else ""
            prefixed = bool(prev) and (prev.isalnum() or prev in "_&")
            if c == "'":
                backslash = self.dialect == "mysql" or (prefixed and prev in "eE")
                i = self.quoted(i, "'", "literal", backslash=backslash, prefixed=prefixed)
            elif c == '"':
                if self.dialect == "mysql":
                    i = self.quoted(i, '"', "literal", backslash=True, prefixed=prefixed)
                else:
                    i = self.quoted(i, '"', "ident", backslash=False, prefixed=prefixed)
            elif c == "`" and self.dialect in ("mysql", "sqlite"):
                i = self.quoted(i, "`", "ident", backslash=False, prefixed=False)
            elif c == "[" and self.dialect == "sqlite":
                i = self.opaque(i, i + 1, "]", "a [bracketed] identifier")
            elif (k := self._is_comment_start(i)) != 0:
                if k == 2 and t.startswith("/*", i):
                    i = self.block_comment(i)
                else:
                    end = t.find("\n", i)
                    i = self.opaque(i, i + k, "\n" if end >= 0 else None, "a comment")
            elif c == "$" and self.dialect == "postgres" and not (prev.isalnum() or prev == "_"):
                m = _DOLLAR_TAG.match(t, i)
                if m is None:
                    self.buf.append(c)
                    i += 1
                else:
                    i = self.opaque(i, m.end(), m.group(0), "a dollar-quoted body")
            elif c == ":":
                if t.startswith("::", i):
                    self.buf.append("::")
                    i += 2
                    continue
                m = _PLACEHOLDER.match(t, i + 1)
                if m is not None and not (prev.isalnum() or prev in ("_", ":")):
                    self.flush()
                    self.tokens.append(Placeholder(m.group(0), i))
                    i = m.end()
                else:
                    self.buf.append(c)
                    i += 1
            elif c == ";":
                self.flush()
                self.tokens.append(Semi(i))
                i += 1
            else:
                self.buf.append(c)
                i += 1
        self.flush()
        return self.tokens

    def opaque(self, start: int, body: int, close: str | None, where: str) -> int:
        """Text from ``start`` to after ``close`` (or the end), kept as written; a reference
        inside becomes :class:`Bad`."""
        t = self.text
        self.flush()
        raw: list[str] = [t[start:body]]
        i = body
        while i < self.n:
            hit = self.refs.get(i)
            if hit is not None:
                end, ref = hit
                if ref is None:
                    raw.append("${")
                else:
                    self.tokens.append(Text("".join(raw), blank=where == "a comment"))
                    raw = []
                    self.tokens.append(Bad(ref, i, where))
                i = end
                continue
            if close is not None and t.startswith(close, i):
                raw.append(close)
                i += len(close)
                break
            raw.append(t[i])
            i += 1
        self.tokens.append(Text("".join(raw), blank=where == "a comment"))
        return i

    def block_comment(self, start: int) -> int:
        """``/* … */``; nested on PostgreSQL."""
        t = self.text
        self.flush()
        raw: list[str] = ["/*"]
        depth, i = 1, start + 2
        while i < self.n and depth:
            hit = self.refs.get(i)
            if hit is not None:
                end, ref = hit
                if ref is None:
                    raw.append("${")
                else:
                    self.tokens.append(Text("".join(raw), blank=True))
                    raw = []
                    self.tokens.append(Bad(ref, i, "a comment"))
                i = end
                continue
            if t.startswith("*/", i):
                depth -= 1
                raw.append("*/")
                i += 2
                continue
            if self.dialect == "postgres" and t.startswith("/*", i):
                depth += 1
                raw.append("/*")
                i += 2
                continue
            raw.append(t[i])
            i += 1
        self.tokens.append(Text("".join(raw), blank=True))
        return i

    def quoted(
        self,
        start: int,
        q: str,
        what: Literal["literal", "ident"],
        *,
        backslash: bool,
        prefixed: bool,
    ) -> int:
        t = self.text
        raw: list[str] = [q]
        pieces: list[str | Reference] = []
        content: list[str] = []
        refs: list[tuple[Reference, int]] = []
        i = start + 1
        while i < self.n:
            hit = self.refs.get(i)
            if hit is not None:
                end, ref = hit
                if ref is None:
                    raw.append("${")
                    content.append("${")
                else:
                    raw.append(t[i:end])
                    pieces.append("".join(content))
                    content = []
                    pieces.append(ref)
                    refs.append((ref, i))
                i = end
                continue
            c = t[i]
            if c == q:
                if t.startswith(q + q, i):
                    raw.append(q + q)
                    content.append(q)
                    i += 2
                    continue
                raw.append(q)
                i += 1
                break
            if backslash and c == "\\" and i + 1 < self.n:
                nxt = t[i + 1]
                raw.append(c + nxt)
                if nxt in "%_":
                    content.append(c + nxt)  # MySQL keeps \% and \_ (for LIKE)
                else:
                    content.append(_MYSQL_ESCAPES.get(nxt, nxt))
                i += 2
                continue
            raw.append(c)
            content.append(c)
            i += 1
        if not refs:
            self.buf.append("".join(raw))
            return i
        self.flush()
        if prefixed:  # E'…', N'…', X'…', _utf8mb4'…', U&"…": their own rules
            where = "a prefixed literal (E'…', N'…', X'…')"
            if what == "ident":
                where = 'a prefixed identifier (U&"…")'
            for ref, off in refs:
                self.tokens.append(Bad(ref, off, where))
            self.tokens.append(Text("".join(raw)))
            return i
        pieces.append("".join(content))
        self.tokens.append(Quoted(what, q, tuple(p for p in pieces if p != ""), start))
        return i


def lex(text: str, dialect: Dialect) -> list[Statement]:
    """The statements of ``text`` (split at top-level ``;``), blank ones left out."""
    out: list[Statement] = [Statement()]
    for tok in _Lexer(text, dialect).run():
        if isinstance(tok, Semi):
            out.append(Statement())
        else:
            out[-1].tokens.append(tok)
    return [s for s in out if not s.blank]


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


# --- params: --------------------------------------------------------------------------------


def convert_param(value: Any, type_: str | None) -> Any:
    """A ``params:`` value as its declared type (no type: as written). Raises ValueError."""
    if type_ is None:
        return value
    if type_ == "null":
        if value is not None and value != "":
            raise ValueError("a null parameter has no value")
        return None
    if value is None:
        raise ValueError(f"a {type_} parameter needs a value")
    if type_ == "str":
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        low = str(value).strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"{value!r} is not true or false")
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a {type_}")
    if type_ == "int":
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        raise ValueError(f"{value!r} is not an integer")
    if type_ == "float":
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            return float(value)
        raise ValueError(f"{value!r} is not a number")
    if type_ == "decimal":
        if isinstance(value, int | float | str):
            try:
                d = Decimal(str(value).strip())
            except InvalidOperation:
                raise ValueError(f"{value!r} is not a decimal number") from None
            if not d.is_finite():
                raise ValueError(f"{value!r} is not a finite decimal number")
            return d
        raise ValueError(f"{value!r} is not a decimal number")
    if type_ == "date":
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        return date.fromisoformat(str(value).strip())
    if type_ == "timestamp":
        if isinstance(value, datetime):
            return value
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day)
        return datetime.fromisoformat(str(value).strip())
    raise ValueError(f"unknown type {type_!r}; one of {', '.join(PARAM_TYPES)}")


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
