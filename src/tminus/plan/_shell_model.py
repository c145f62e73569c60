"""What reading a shell command finds, for :mod:`tminus.plan.shellquote`: the contexts a
reference can stand in, :class:`Rejected` and :class:`Analysis`, the reasons a place is refused
(each with its safe spelling), and the lexer's bookkeeping shared by every context it reads
(where a reference is placed, refused, or stands after text that cannot be read with certainty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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


class _LexerState:
    """The state of one reading of a command text, and the helpers every context uses."""

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
