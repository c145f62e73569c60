"""The SQL lexer of :mod:`tminus.plan.sqlbind`: splits a statement template into statements and
tokens (text kept as written, quoted literals and identifiers holding references, bare
references, ``:name`` placeholders, references where no value can go), per dialect."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from tminus.plan.interpolate import Reference, references

Dialect = Literal["postgres", "mysql", "sqlite"]

_REF = re.compile(r"\$\$\{|\$\{([^{}]*)\}")
_IDENT_START = re.compile(r"[A-Za-z_]")
_PLACEHOLDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A run of characters none of which can start a literal, identifier, comment, dollar quote,
#: placeholder, statement end or reference.
_PLAIN = re.compile(r"[^'\"`\[\-#/$:;]+")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_MYSQL_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}


def dialect_of(kind: str) -> Dialect:
    """The lexer dialect of a database target kind."""
    if kind in ("mysql", "mariadb"):
        return "mysql"
    if kind == "sqlite":
        return "sqlite"
    return "postgres"


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
