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

from tminus.plan._shell_lexer import _Lexer
from tminus.plan._shell_model import _REF, Analysis, Rejected
from tminus.plan._shell_model import DOUBLE as DOUBLE
from tminus.plan._shell_model import HEREDOC as HEREDOC
from tminus.plan._shell_model import HEREDOC_LITERAL as HEREDOC_LITERAL
from tminus.plan._shell_model import SINGLE as SINGLE
from tminus.plan._shell_model import UNQUOTED as UNQUOTED

__all__ = [
    "Analysis",
    "Rejected",
    "UnsafeCommand",
    "analyse",
    "escape",
    "substitute",
]


class UnsafeCommand(ValueError):
    """A reference whose value cannot be put into the command safely."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message + (f" ({hint})" if hint else ""))
        self.message, self.hint = message, hint


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
