"""Context-aware substitution of ``${…}`` references into shell command text.

A command in a plan is shell text. tminus reads it the way POSIX ``sh`` (and bash) will, and
writes each reference's value with the escape that the place it stands in needs, so that
the command receives the value as *data*, whatever characters it holds:

=====================================  ==========================================================
where the reference stands             what is written
=====================================  ==========================================================
unquoted (also mid-word: ``a${v}b``)   ``shlex.quote(value)``: one single-quoted word
inside ``'…'``                         the value, each ``'`` written as ``'\\''``
inside ``"…"``                         the value, ``\\`` ``"`` ``$`` and backquote escaped
inside ``$(…)``                        as at the top: a fresh unquoted context (any nesting)
here-document, ``<<EOF`` (unquoted)    the value, ``\\`` ``$`` and backquote escaped
here-document, ``<<'EOF'`` (quoted)    the value as it is
=====================================  ==========================================================

A value that would end a here-document early (a line equal to its delimiter) is refused.

Places where no escape can be proven right are refused, by ``tminus check`` (with the safe
spelling as a hint) and again before the command runs: a comment, backquotes (use ``$(…)``),
``$'…'``, arithmetic (``$((…))``, ``((…))``, ``$[…]``), a shell ``${…}`` expansion written
with ``$${`` (``$${X:-${v}}``), a here-document delimiter, a reference right after a
backslash, and anything after text tminus cannot read with certainty (an unterminated
quote, ``case`` inside ``$(…)``, a shell ``${…}`` with quotes inside). A reference the
reading does not place is refused too: nothing is guessed.

A value holding a NUL byte is refused: no command line can carry one.

``$${`` is a literal ``${`` (so ``$${HOME}`` is the shell's ``${HOME}``); a plain shell
variable ``$VAR`` is left alone.

What this cannot see: a command that itself runs its argument as shell text (``sh -c '…'``,
``bash -c``, ``ssh host '…'``, ``eval``). Such an argument receives the value as data, and
the inner shell then reads it as code: pass values to an inner shell as arguments
(``sh -c 'echo "$1"' sh ${v}``) or environment variables instead.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "Analysis",
    "Rejected",
    "UnsafeCommand",
    "analyse",
    "escape",
    "substitute",
]

# The same pattern as tminus.plan.interpolate._REF (kept here to avoid an import cycle).
_REF = re.compile(r"\$\$\{|\$\{([^{}]*)\}")

#: Contexts a reference can be substituted in.
UNQUOTED, SINGLE, DOUBLE, HEREDOC, HEREDOC_LITERAL = (
    "unquoted",
    "single",
    "double",
    "heredoc",
    "heredoc-literal",
)


class UnsafeCommand(ValueError):
    """A reference whose value cannot be put into the command safely."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message + (f" ({hint})" if hint else ""))
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class Rejected:
    """A reference tminus will not substitute: where it is, why, and the safe spelling."""

    start: int
    end: int
    ref: str
    reason: str
    hint: str

    def line_col(self, text: str) -> tuple[int, int]:
        """1-based line and column of the reference inside the command text."""
        line = text.count("\n", 0, self.start) + 1
        col = self.start - (text.rfind("\n", 0, self.start) + 1) + 1
        return line, col


@dataclass(frozen=True)
class _Heredoc:
    delim: str
    strip_tabs: bool
    body_start: int
    body_end: int


@dataclass
class Analysis:
    """Each reference of a command text with its context, or why it is refused."""

    text: str
    contexts: dict[int, str] = field(default_factory=dict)  # start offset -> context
    rejected: list[Rejected] = field(default_factory=list)
    heredocs: list[_Heredoc] = field(default_factory=list)


_HINTS = {
    "comment": (
        "it stands in a comment, which ends at the first newline a value may hold",
        "move it out of the comment, or write $${…} to keep the text literal",
    ),
    "backquote": (
        "it stands inside backquotes, whose own backslash rules make no escape certain",
        "write $(…) instead of `…`, e.g. $(cat ${v})",
    ),
    "ansi": (
        "it stands inside $'…', whose escapes differ between shells",
        "quote it with '…' or \"…\" instead, e.g. '${v}'",
    ),
    "arith": (
        "it stands inside shell arithmetic, which evaluates the value as an expression",
        "compute it in the plan, or pass it as a plain word (expr ${v} + 1)",
    ),
    "param": (
        "it stands inside a shell ${…} expansion written with $${",
        "assign it to a shell variable first: X=${v}; then use $${X:-…}",
    ),
    "delimiter": (
        "it stands in a here-document delimiter",
        "write the delimiter literally, e.g. <<'EOF'",
    ),
    "heredoc-line": (
        "it stands on the line of a here-document operator, before the body starts",
        'set a shell variable on the line before: V=${v}; then use "$V" on this line',
    ),
    "backslash": (
        "a backslash stands right before it, and would escape the value's first character",
        "drop the backslash (the value is quoted for you), or write $${…} for a literal ${…}",
    ),
}


class _Lexer:
    def __init__(self, text: str) -> None:
        self.t = text
        self.n = len(text)
        self.a = Analysis(text)
        self.pending: list[tuple[str, bool, bool]] = []  # here-documents not yet read
        self.pending_level = 0  # the $(…) depth their operators stand at
        self.level = 0
        self.ambiguous: tuple[int, str, str] | None = None

    # --- helpers ----------------------------------------------------------------------
    def tok(self, i: int) -> tuple[str, int] | None:
        """A reference ("ref") or a ``$${`` ("esc") at ``i``, with its end."""
        if self.t[i] != "$":
            return None
        m = _REF.match(self.t, i)
        if m is None:
            return None
        return ("esc" if m.group(0) == "$${" else "ref", m.end())

    def slot(self, start: int, end: int, context: str) -> None:
        if self.pending:  # a newline in the value: where would the body start?
            self.reject(start, end, "heredoc-line")
            return
        self.a.contexts[start] = context

    def reject(self, start: int, end: int, why: str) -> None:
        reason, hint = _HINTS[why]
        self.a.rejected.append(Rejected(start, end, self.t[start:end], reason, hint))

    def unsure(self, at: int, reason: str, hint: str) -> None:
        """From ``at`` on, tminus cannot be sure how the shell reads the text."""
        if self.ambiguous is None or at < self.ambiguous[0]:
            self.ambiguous = (at, reason, hint)

    def refs_in(self, i: int, end: int, why: str | None, context: str | None = None) -> None:
        """Every reference in ``[i, end)``: rejected (``why``) or in ``context``."""
        while i < end:
            tk = self.tok(i)
            if tk and tk[0] == "ref":
                if why:
                    self.reject(i, tk[1], why)
                elif context:
                    self.slot(i, tk[1], context)
                i = tk[1]
            elif tk:
                i = tk[1]
            else:
                i += 1

    def newline_in_quotes(self, i: int) -> None:
        if self.pending:
            self.unsure(i, "a quoted newline follows a here-document operator", "split the line")

    # --- contexts ---------------------------------------------------------------------
    def words(self, i: int, term: str | None) -> int:
        """Unquoted shell text from ``i``; with ``term`` ")" the inside of ``$(…)``."""
        self.level += 1
        try:
            return self._words(i, term)
        finally:
            self.level -= 1

    def _words(self, i: int, term: str | None) -> int:
        t, n = self.t, self.n
        depth = 0
        word_start = True
        prev = ""
        while i < n:
            c = t[i]
            tk = self.tok(i)
            if tk is not None:
                if tk[0] == "ref":
                    self.slot(i, tk[1], UNQUOTED)
                    i = tk[1]
                else:
                    i = self.shell_param(tk[1])
                word_start, prev = False, "x"
                continue
            if c == "\\":
                i = self.backslash(i)
                word_start, prev = False, "x"
                continue
            if c == "'":
                i = self.single(i + 1)
            elif c == '"':
                i = self.double(i + 1)
            elif c == "`":
                i = self.backquote(i + 1)
            elif c == "$":
                i = self.dollar(i)
            elif c == "#" and word_start:
                if prev in ("<", ">"):
                    self.unsure(i, "'#' right after a redirection", "add a space or quote it")
                i = self.comment(i)
                continue
            elif c == "\n":
                i += 1
                if self.pending and self.pending_level != self.level:
                    self.unsure(i, "a newline in $(…) after a here-document operator", "split it")
                if self.pending:
                    i = self.heredoc_bodies(i)
                word_start, prev = True, "\n"
                continue
            elif t.startswith("<<<", i):  # bash's here-string: a word follows
                i += 3
                word_start, prev = True, "<"
                continue
            elif t.startswith("<<", i):
                i = self.heredoc_op(i + 2)
                word_start, prev = True, "x"
                continue
            elif c == "(":
                if word_start and t.startswith("((", i):
                    i = self.arith(i + 2)
                    word_start, prev = False, "x"
                    continue
                depth += 1
                i += 1
                word_start, prev = True, c
                continue
            elif c == ")":
                if term == ")" and depth == 0:
                    return i + 1
                depth = max(0, depth - 1)
                i += 1
                word_start, prev = True, c
                continue
            elif c in " \t;&|<>":
                i += 1
                word_start, prev = True, c
                continue
            else:
                if (
                    term == ")"
                    and word_start
                    and t.startswith("case", i)
                    and (i + 4 == n or t[i + 4] in " \t\n;")
                ):
                    self.unsure(
                        i,
                        "a case statement inside $(…) (its patterns end in ')')",
                        "move the case statement into a shell function or out of $(…)",
                    )
                i += 1
            word_start, prev = False, "x"
        if term == ")":
            self.unsure(0, "an unterminated $(…)", "close it with ')'")
        return n

    def backslash(self, i: int) -> int:
        if i + 1 >= self.n:
            return self.n
        tk = self.tok(i + 1)
        if tk and tk[0] == "ref":
            self.reject(i + 1, tk[1], "backslash")
            return tk[1]
        if tk:  # \$${ → the shell sees \${: an escaped '$' and a literal '{'
            return tk[1]
        return i + 2

    def single(self, i: int) -> int:
        t = self.t
        while i < self.n:
            if t[i] == "'":
                return i + 1
            tk = self.tok(i)
            if tk:
                if tk[0] == "ref":
                    self.slot(i, tk[1], SINGLE)
                i = tk[1]
                continue
            if t[i] == "\n":
                self.newline_in_quotes(i)
            i += 1
        self.unsure(0, "an unterminated '…'", "close the quote")
        return self.n

    def double(self, i: int) -> int:
        t = self.t
        while i < self.n:
            c = t[i]
            tk = self.tok(i)
            if tk:
                if tk[0] == "ref":
                    self.slot(i, tk[1], DOUBLE)
                    i = tk[1]
                else:
                    i = self.shell_param(tk[1])
                continue
            if c == '"':
                return i + 1
            if c == "\\":
                i = self.backslash(i)
            elif c == "`":
                i = self.backquote(i + 1)
            elif c == "$":
                i = self.dollar(i, in_double=True)
            else:
                if c == "\n":
                    self.newline_in_quotes(i)
                i += 1
        self.unsure(0, 'an unterminated "…"', "close the quote")
        return self.n

    def dollar(self, i: int, *, in_double: bool = False) -> int:
        """``$`` not starting a reference: ``$((``, ``$(``, ``$'``, ``$"``, ``$[``, ``${``."""
        t = self.t
        if t.startswith("$((", i):
            return self.arith(i + 3)
        if t.startswith("$(", i):
            return self.words(i + 2, ")")
        if t.startswith("$[", i):
            end = t.find("]", i)
            end = self.n if end < 0 else end + 1
            self.refs_in(i, end, "arith")
            return end
        if t.startswith("${", i):  # not a reference: e.g. ${a{b}
            return self.shell_param(i + 2)
        if not in_double and t.startswith("$'", i):
            return self.ansi(i + 2)
        if not in_double and t.startswith('$"', i):
            return self.double(i + 2)
        return i + 1

    def shell_param(self, i: int) -> int:
        """The inside of a shell ``${…}`` (written ``$${…}`` in a plan)."""
        t = self.t
        while i < self.n:
            tk = self.tok(i)
            if tk:
                if tk[0] == "ref":
                    self.reject(i, tk[1], "param")
                else:
                    self.unsure(i, "a shell ${…} nested in another", "assign it to a variable")
                i = tk[1]
                continue
            c = t[i]
            if c == "}":
                return i + 1
            if c in "'\"\\`$":
                self.unsure(
                    i,
                    "a shell ${…} expansion with quotes or expansions inside",
                    "assign the shell value to a variable first",
                )
            i += 1
        self.unsure(0, "an unterminated shell ${…}", "close it with '}'")
        return self.n

    def ansi(self, i: int) -> int:
        t = self.t
        while i < self.n:
            tk = self.tok(i)
            if tk:
                if tk[0] == "ref":
                    self.reject(i, tk[1], "ansi")
                i = tk[1]
                continue
            if t[i] == "\\":
                if t.startswith("\\'", i):
                    self.unsure(i, "\\' inside $'…' (shells disagree on it)", "use '\\'' outside")
                nxt = self.tok(i + 1) if i + 1 < self.n else None
                if nxt and nxt[0] == "ref":
                    self.reject(i + 1, nxt[1], "ansi")
                    i = nxt[1]
                    continue
                i += 2
                continue
            if t[i] == "'":
                return i + 1
            i += 1
        self.unsure(0, "an unterminated $'…'", "close the quote")
        return self.n

    def backquote(self, i: int) -> int:
        t = self.t
        while i < self.n:
            tk = self.tok(i)
            if tk:
                if tk[0] == "ref":
                    self.reject(i, tk[1], "backquote")
                i = tk[1]
                continue
            if t[i] == "\\":
                nxt = self.tok(i + 1) if i + 1 < self.n else None
                if nxt:
                    if nxt[0] == "ref":
                        self.reject(i + 1, nxt[1], "backquote")
                    i = nxt[1]
                    continue
                i += 2
                continue
            if t[i] == "`":
                return i + 1
            i += 1
        self.unsure(0, "unterminated backquotes", "close them, or better use $(…)")
        return self.n

    def arith(self, i: int) -> int:
        """After ``$((`` or ``((``: to the matching ``))``."""
        t = self.t
        depth = 0
        start = i
        while i < self.n:
            tk = self.tok(i)
            if tk:
                i = tk[1]
                continue
            c = t[i]
            if c in "'\"`\\":
                self.unsure(i, "quotes inside shell arithmetic", "compute the value in the plan")
            if c == "(":
                depth += 1
            elif c == ")":
                if depth == 0:
                    if t.startswith("))", i):
                        self.refs_in(start, i, "arith")
                        return i + 2
                    self.unsure(start, "$( (…) …): arithmetic or a subshell?", "add a space")
                    self.refs_in(start, i, "arith")
                    return i + 1
                depth -= 1
            i += 1
        self.refs_in(start, self.n, "arith")
        self.unsure(0, "unterminated arithmetic", "close it with '))'")
        return self.n

    def comment(self, i: int) -> int:
        end = self.t.find("\n", i)
        end = self.n if end < 0 else end
        self.refs_in(i, end, "comment")
        return end

    def heredoc_op(self, i: int) -> int:
        """After ``<<``: read the delimiter word; its body starts after the next newline."""
        t = self.t
        strip = False
        if i < self.n and t[i] == "-":
            strip, i = True, i + 1
        while i < self.n and t[i] in " \t":
            i += 1
        word, quoted = "", False
        while i < self.n and t[i] not in " \t\n;&|<>()":
            tk = self.tok(i)
            if tk:
                if tk[0] == "ref":
                    self.reject(i, tk[1], "delimiter")
                else:
                    self.unsure(i, "a here-document delimiter with $${", "write it literally")
                word += t[i : tk[1]]
                i = tk[1]
                continue
            c = t[i]
            if c in "'\"":
                quoted = True
                end = t.find(c, i + 1)
                if end < 0:
                    self.unsure(0, "an unterminated quote in a delimiter", "close the quote")
                    return self.n
                self.refs_in(i, end, "delimiter")
                word += t[i + 1 : end]
                i = end + 1
            elif c == "\\" and i + 1 < self.n:
                quoted = True
                word += t[i + 1]
                i += 2
            else:
                word += c
                i += 1
        if not word:
            self.unsure(i, "a here-document with no delimiter", "write <<EOF")
        if self.pending and self.pending_level != self.level:
            self.unsure(i, "here-document operators at different $(…) depths", "split them")
        self.pending.append((word, strip, quoted))
        self.pending_level = self.level
        return i

    def heredoc_bodies(self, i: int) -> int:
        """At the start of a line after here-document operators: read their bodies."""
        t = self.t
        pending, self.pending = self.pending, []
        for delim, strip, quoted in pending:
            start = j = i
            body_end = next_i = self.n
            while j < self.n:
                k = t.find("\n", j)
                k = self.n if k < 0 else k
                line = t[j:k]
                if (line.lstrip("\t") if strip else line) == delim:
                    body_end, next_i = j, min(k + 1, self.n)
                    break
                j = k + 1
            self.a.heredocs.append(_Heredoc(delim, strip, start, body_end))
            if quoted:
                self.refs_in(start, body_end, None, HEREDOC_LITERAL)
            else:
                self.heredoc_text(start, body_end)
            i = next_i
        return i

    def heredoc_text(self, i: int, end: int) -> None:
        """The body of an unquoted here-document: expansions, but no quoting."""
        t = self.t
        while i < end:
            tk = self.tok(i)
            if tk:
                if tk[0] == "ref":
                    self.slot(i, tk[1], HEREDOC)
                    i = tk[1]
                else:
                    i = self.shell_param(tk[1])
            elif t[i] == "\\":
                i = self.backslash(i)
            elif t[i] == "`":
                i = self.backquote(i + 1)
            elif t[i] == "$":
                if t.startswith("$'", i) or t.startswith('$"', i):
                    i += 1
                else:
                    i = self.dollar(i, in_double=True)
            else:
                i += 1
            if i > end:
                self.unsure(end, "an expansion running past its here-document", "close it")


def analyse(text: str) -> Analysis:
    """Each reference in command ``text`` with the context it stands in, or refused."""
    if "${" not in text:
        return Analysis(text)
    lx = _Lexer(text)
    lx.words(0, None)
    a = lx.a
    if lx.ambiguous is not None:
        at = lx.ambiguous[0]
        for start in [s for s in a.contexts if s >= at]:
            del a.contexts[start]
    # Fail closed: a reference the reading above did not place is refused, never guessed.
    placed = set(a.contexts) | {r.start for r in a.rejected}
    for m in _REF.finditer(text):
        if m.group(0) == "$${" or m.start() in placed:
            continue
        if lx.ambiguous is not None and m.start() >= lx.ambiguous[0]:
            reason, hint = f"tminus cannot read past {lx.ambiguous[1]}", lx.ambiguous[2]
        else:  # pragma: no cover - every reference is placed or stands after an ambiguity
            reason, hint = "tminus cannot tell where it stands", "simplify the text around it"
        a.rejected.append(Rejected(m.start(), m.end(), m.group(0), reason, hint))
    a.rejected.sort(key=lambda r: r.start)
    return a


def escape(value: str, context: str) -> str:
    """``value`` written for ``context`` so that the shell reads it back exactly."""
    if context == UNQUOTED:
        return shlex.quote(value)
    if context == SINGLE:
        return value.replace("'", "'\\''")
    if context == DOUBLE:
        return re.sub(r'([\\"$`])', r"\\\1", value)
    if context == HEREDOC:
        return re.sub(r"([\\$`])", r"\\\1", value)
    if context == HEREDOC_LITERAL:
        return value
    raise ValueError(f"unknown context {context!r}")  # pragma: no cover


def substitute(text: str, lookup: Callable[[re.Match[str]], str]) -> str:
    """``text`` with each reference replaced by ``lookup(match)``, escaped for its context.

    Raises :class:`UnsafeCommand` for a reference in a refused place, a value holding NUL,
    or a value that would end a here-document early."""
    a = analyse(text)
    refused = {r.start: r for r in a.rejected}
    out: list[str] = []
    shifts: list[tuple[int, int]] = []  # (template offset after a match, output delta there)
    delta = 0
    last = 0
    for m in _REF.finditer(text):
        out.append(text[last : m.start()])
        if m.group(0) == "$${":
            repl = "${"
        else:
            bad = refused.get(m.start())
            if bad is not None:
                raise UnsafeCommand(f"{bad.ref}: {bad.reason}", bad.hint)
            value = lookup(m)
            if "\0" in value:
                raise UnsafeCommand(
                    f"the value of {m.group(0)} holds a NUL byte, which no command can receive"
                )
            repl = escape(value, a.contexts[m.start()])
        out.append(repl)
        delta += len(repl) - (m.end() - m.start())
        shifts.append((m.end(), delta))
        last = m.end()
    out.append(text[last:])
    result = "".join(out)

    def at(offset: int) -> int:
        d = 0
        for end, dl in shifts:
            if end > offset:
                break
            d = dl
        return offset + d

    for h in a.heredocs:
        body = result[at(h.body_start) : at(h.body_end)]
        lines = body.split("\n")
        if body.endswith("\n"):
            lines.pop()
        if any((ln.lstrip("\t") if h.strip_tabs else ln) == h.delim for ln in lines):
            raise UnsafeCommand(
                f"a value would end the here-document <<{h.delim} early "
                f"(it holds a line '{h.delim}')",
                "pick a delimiter the values cannot contain",
            )
    return result


_SHELLS = frozenset({"sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "busybox"})


def script_index(argv: list[str]) -> int | None:
    """In an argv command (``[sh, -c, SCRIPT, …]``), the index of the shell script, if any."""
    if len(argv) < 3 or argv[0].rsplit("/", 1)[-1] not in _SHELLS:
        return None
    i = 1
    if argv[0].rsplit("/", 1)[-1] == "busybox":
        if argv[1] not in ("sh", "ash"):
            return None
        i = 2
    while i < len(argv) - 1 and argv[i].startswith("-") and argv[i] != "--":
        if "c" in argv[i][1:] and not argv[i].startswith("--"):
            return i + 1
        i += 1
    return None
