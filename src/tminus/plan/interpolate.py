"""Variables and secrets in plan strings: ``${name}``, ``${env:NAME}`` (``${env:NAME:-default}``),
``${file:PATH}``,
``${artifact:STEP.KEY}``; ``$${`` writes a literal ``${``.

Values that come from the plan's ``secrets:`` section are registered with a :class:`Masker`,
and everything tminus prints, logs or stores passes through it.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from tminus.plan import shellquote

__all__ = [
    "BUILTIN_VARIABLES",
    "MASK",
    "Masker",
    "Reference",
    "ResolveError",
    "Resolver",
    "UnsafeCommandError",
    "mask_url_passwords",
    "redact_url",
    "references",
    "url_password",
]

MASK = "***"
#: Variables every plan can use without declaring them.
BUILTIN_VARIABLES = (
    "deploy_id",
    "plan_name",
    "plan_version",
    "environment",
    "operator",
    "plan_dir",
    "state_dir",
)

_REF = re.compile(r"\$\$\{|\$\{([^{}]*)\}")


class ResolveError(ValueError):
    """A reference that cannot be resolved (undefined variable, unset env var, missing file)."""


class UnsafeCommandError(ResolveError):
    """A reference that cannot be put into a command safely (see :mod:`shellquote`)."""


@dataclass(frozen=True)
class Reference:
    namespace: str  # "" for a variable or secret, else env / file / artifact
    name: str
    text: str


def references(text: str) -> list[Reference]:
    """The ``${…}`` references in ``text`` (escaped ``$${`` excluded)."""
    out: list[Reference] = []
    for m in _REF.finditer(text):
        if m.group(0) == "$${":
            continue
        inner = m.group(1).strip()
        ns, sep, name = inner.partition(":")
        if (sep and ns in ("env", "file", "artifact")) or sep:
            out.append(Reference(ns, name.strip(), m.group(0)))
        else:
            out.append(Reference("", inner, m.group(0)))
    return out


#: The password part of a URL's userinfo: ``scheme://user:PASSWORD@`` (up to the last ``@``
#: before the path, so a raw ``@`` in the password is masked too).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:]*:)([^\s/?#]+)(@)")


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every ``scheme://user:PASSWORD@host`` replaced by ``***``.

    The one URL redaction for text: messages, output and descriptions (the Masker applies it
    to everything it masks). :func:`redact_url` is the form of one URL that is recorded."""
    if "://" not in text or "@" not in text:
        return text
    return _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), text)


#: Query parameters that carry a URL's password (``?password=…``), as libpq and PyMySQL read.
_PASSWORD_PARAMS = ("password", "pass", "passwd", "pwd")


def url_password(url: str) -> str | None:
    """The password in a URL (user info or a ``password=`` query parameter), if any."""
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k.lower() in _PASSWORD_PARAMS and v:
            return v
    return None


def redact_url(url: str) -> str:
    """One URL without its password (user info and ``password=`` query parameters dropped,
    not masked): the stable form a backup manifest records as its target, so backups of one
    database group together whatever password reached them."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostport = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = urlencode(
        [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k.lower() not in _PASSWORD_PARAMS
        ]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass
class Masker:
    """Replaces every registered secret value with ``***``, and the password of any URL
    (``scheme://user:PASSWORD@``), wherever that password came from."""

    secrets: set[str] = field(default_factory=set)

    def add(self, value: str) -> None:
        if value and len(value) >= 3:
            self.secrets.add(value)
            self.secrets.add(shlex.quote(value))

    def mask(self, text: str) -> str:
        if not text:
            return text
        for s in sorted(self.secrets, key=len, reverse=True):
            if s in text:
                text = text.replace(s, MASK)
        return mask_url_passwords(text)

    def mask_data(self, data: Any) -> Any:
        if isinstance(data, str):
            return self.mask(data)
        if isinstance(data, Mapping):
            return {k: self.mask_data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.mask_data(v) for v in data]
        return data


ArtifactLookup = Callable[[str, str], Any]


@dataclass
class Resolver:
    """Resolves references against variables, secrets, the environment and artifacts."""

    variables: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    base_dir: Path = field(default_factory=Path.cwd)
    artifacts: ArtifactLookup | None = None
    masker: Masker = field(default_factory=Masker)
    #: The deploy's state store (set by the runner): a restore of an earlier deploy's backup
    #: (``from: {deploy: latest, …}``) looks it up there.
    store: Any = None

    @classmethod
    def for_plan(
        cls,
        variables: Mapping[str, Any],
        secrets: Mapping[str, str],
        *,
        env: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
        builtins: Mapping[str, Any] | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> Resolver:
        """Resolve the plan's secrets (registering them for masking), then its variables."""
        r = cls(env=dict(os.environ) if env is None else env, base_dir=base_dir or Path.cwd())
        r.variables.update(builtins or {})
        for name, raw in secrets.items():
            value = r._resolve_value(raw, quote=False, mark_secret=True)
            r.secrets[name] = value
            r.masker.add(value)
        pending = dict(variables)
        pending.update(overrides or {})
        given = set(overrides or {})
        for name, raw in pending.items():
            # A value typed on the command line (--var) is literal text: a `${` in it is
            # data, never a reference (no ${env:…}/${file:…} read on an operator's say-so).
            if name in given or not isinstance(raw, str):
                r.variables[name] = raw
            else:
                r.variables[name] = r.resolve(raw)
        return r

    def _lookup(self, ref: Reference, *, mark_secret: bool = False) -> tuple[str, bool]:
        """The value of one reference and whether it is secret."""
        if ref.namespace == "env":
            name, has_default, default = ref.name.partition(":-")
            if name in self.env:
                return self.env[name], mark_secret
            if has_default:
                return default, mark_secret
            raise ResolveError(
                f"environment variable {name} is not set",
            )
        if ref.namespace == "file":
            p = Path(ref.name).expanduser()
            if not p.is_absolute():
                p = self.base_dir / p
            try:
                return p.read_text().rstrip("\n"), mark_secret
            except OSError as exc:
                raise ResolveError(f"cannot read {ref.name}: {exc.strerror or exc}") from None
        if ref.namespace == "artifact":
            step, _, key = ref.name.partition(".")
            if self.artifacts is None:
                raise ResolveError(f"artifact {ref.name} is not available yet")
            value = self.artifacts(step, key or "value")
            if value is None:
                raise ResolveError(f"step '{step}' has recorded no artifact '{key or 'value'}'")
            return str(value), False
        if ref.namespace:
            raise ResolveError(
                f"unknown reference '{ref.text}'; use ${{name}}, ${{env:NAME}}, "
                "${file:PATH} or ${artifact:STEP.KEY}"
            )
        if ref.name in self.secrets:
            return self.secrets[ref.name], True
        if ref.name in self.variables:
            return str(self.variables[ref.name]), False
        raise ResolveError(f"undefined variable '{ref.name}'")

    def _resolve_value(self, text: str, *, quote: bool, mark_secret: bool = False) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            ref = references(m.group(0))[0]
            value, secret = self._lookup(ref, mark_secret=mark_secret)
            if secret and not mark_secret:
                self.masker.add(value)
            return shlex.quote(value) if quote else value

        return _REF.sub(sub, text)

    def resolve(self, text: str) -> str:
        """Substitute references in ``text``."""
        return self._resolve_value(text, quote=False)

    def resolve_shell(self, text: str) -> str:
        """Substitute references into command text, each value escaped for the place it
        stands in (unquoted, '…', "…", $(…), here-document: see :mod:`tminus.plan.shellquote`),
        so the command receives it as data. Raises :class:`UnsafeCommandError` (a
        ResolveError) for a reference in a place no escape is certain for, or a NUL."""

        def lookup(m: re.Match[str]) -> str:
            value, secret = self._lookup(references(m.group(0))[0])
            if secret:
                self.masker.add(value)
                for context in (shellquote.SINGLE, shellquote.DOUBLE, shellquote.HEREDOC):
                    self.masker.add(shellquote.escape(value, context))  # as it is shown
            return value

        try:
            return shellquote.substitute(text, lookup)
        except shellquote.UnsafeCommand as exc:
            raise UnsafeCommandError(str(exc)) from None

    def resolve_argv(self, argv: list[str]) -> list[str]:
        """Substitute references into an argv command: each element is data (no shell),
        except the script of ``[sh, -c, SCRIPT, …]``, which is command text (resolve_shell).
        A value holding NUL is refused (no argv can carry it)."""
        script = shellquote.script_index(argv)
        out = [
            self.resolve_shell(a) if k == script else self.resolve(a) for k, a in enumerate(argv)
        ]
        for a in out:
            if "\0" in a:
                raise UnsafeCommandError("a value holds a NUL byte, which no command can receive")
        return out

    def resolve_data(self, data: Any, *, skip: Iterable[str] = ()) -> Any:
        """Resolve every string inside nested dicts and lists (keys in ``skip`` untouched)."""
        skipped = set(skip)
        if isinstance(data, str):
            return self.resolve(data)
        if isinstance(data, Mapping):
            return {
                k: (v if k in skipped else self.resolve_data(v, skip=skipped))
                for k, v in data.items()
            }
        if isinstance(data, list):
            return [self.resolve_data(v, skip=skipped) for v in data]
        return data

    def mask(self, text: str) -> str:
        return self.masker.mask(text)

    def lookup(self, ref: Reference) -> str:
        """The value of one reference (a secret's value is registered for masking)."""
        value, secret = self._lookup(ref)
        if secret:
            self.masker.add(value)
        return value
