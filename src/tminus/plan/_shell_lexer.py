"""The shell lexer of :mod:`tminus.plan.shellquote`: reads a command text the way POSIX ``sh``
(and bash) will, context by context (words, quotes, ``$(…)``, here-documents, …), and places
each reference in the context it stands in, or refuses it."""

from __future__ import annotations

from tminus.plan._shell_model import (
    DOUBLE,
    HEREDOC,
    HEREDOC_LITERAL,
    SINGLE,
    UNQUOTED,
    _Heredoc,
    _LexerState,
)


class _Lexer(_LexerState):
    """Reads a command text from the top (:meth:`words` ``(0, None)``), into ``self.a``."""

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
