"""`tminus check` warnings for a secret written where tminus shows and stores it in clear.

A value declared under ``secrets:`` is registered with the :class:`~tminus.plan.interpolate.Masker`
and replaced by ``***`` wherever it appears in what tminus prints, logs or stores. A value in
``variables:`` is not. Two mistakes put a password there instead:

- ``secret-in-variables``: a variable whose name says it is a secret (``db_password``,
  ``api_token``, ``secret_key``, …) or whose ``${env:…}`` / ``${file:…}`` source does
  (``${env:PGPASSWORD}``, ``${file:deploy.key}``): taken from the environment or a file, or
  written in clear.
- ``password-in-url``: a URL anywhere outside ``secrets:`` (variables, targets, steps) whose
  userinfo holds a password (``postgresql://app:PASSWORD@db/shop``) that is written in clear, or
  comes from ``${env:…}`` / ``${file:…}`` or a plain variable rather than from a secret.

tminus masks the password part of every URL in its output whatever its source, but only in that
form: the same value printed alone (by a command, in an error message) is masked only if it is a
secret; and a literal password stays in the plan file, in every deploy's plan snapshot and in
``tminus render``. Both are warnings: ``--strict`` makes them fail the check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from tminus.plan.interpolate import Reference, references
from tminus.plan.model import Plan
from tminus.plan.problems import Loc, Problem

__all__ = ["looks_secret", "secret_problems"]

#: Words that, as the last word of a name, make it a secret's name.
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "pass",
        "pw",
        "pwd",
        "secret",
        "token",
        "apikey",
        "credential",
        "credentials",
        "pem",
    }
)
#: Endings of a last word that make it a secret's name (``PGPASSWORD``, ``mytoken``).
_SECRET_SUFFIXES = ("password", "passwd", "passphrase", "secret", "token", "apikey")
#: A name ending in ``key`` is a secret's with one of these words before it.
_KEY_QUALIFIERS = frozenset({"api", "private", "secret", "access", "signing", "ssh", "deploy"})
_WORD = re.compile(r"[a-z0-9]+")
_FILE_SECRET = re.compile(r"(?:^|/)id_(?:rsa|ecdsa|ed25519|dsa)$|\.(?:key|pem|p12|pfx)$")

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://([^\s/?#@:]*):([^\s/?#]*)@")
_REF = re.compile(r"\$\$\{|\$\{[^{}]*\}")
_HINT = (
    "declare it under 'secrets:' (e.g. `db_password: ${env:DB_PASSWORD}`) and use "
    "${db_password}: a secret is masked as *** wherever it appears in tminus's output, "
    "logs and state"
)


def looks_secret(name: str) -> bool:
    """Whether a variable or environment variable name says it holds a secret."""
    words = _WORD.findall(name.lower().replace("apikey", "api_key"))
    if not words:
        return False
    last = words[-1]
    if last in _SECRET_WORDS or last.endswith(_SECRET_SUFFIXES):
        return True
    return last == "key" and any(w in _KEY_QUALIFIERS for w in words[:-1])


def _source_looks_secret(ref: Reference) -> bool:
    if ref.namespace == "env":
        return looks_secret(ref.name.partition(":-")[0])
    if ref.namespace == "file":
        path = ref.name.lower()
        base = path.rsplit("/", 1)[-1]
        return bool(_FILE_SECRET.search(path)) or looks_secret(base.partition(".")[0])
    return False


def _strings(data: Any, path: Loc) -> Iterator[tuple[Loc, str]]:
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _strings(v, (*path, str(k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _strings(v, (*path, i))


def _url_passwords(text: str) -> Iterator[str]:
    """The password part of each URL in ``text``; ``${…}`` references kept whole (a
    ``${env:PW}`` has a colon of its own)."""
    refs: list[str] = []

    def hide(m: re.Match[str]) -> str:
        refs.append(m.group(0))
        return f"\0{len(refs) - 1}\0"

    hidden = _REF.sub(hide, text)
    for m in _URL.finditer(hidden):
        yield re.sub(r"\0(\d+)\0", lambda r: refs[int(r.group(1))], m.group(2))


def _url_problem(password: str, plan: Plan) -> str | None:
    """What is wrong with a URL's password part, or None (empty, or only secrets)."""
    if not password:
        return None
    refs = references(password)
    if _REF.sub("", password):
        return (
            "a password is written in clear in this URL (it is kept in the plan and in every "
            "deploy's plan snapshot)"
        )
    outside = [r for r in refs if r.namespace in ("env", "file")]
    if outside:
        return (
            f"the password of this URL comes from {outside[0].text}, outside 'secrets:' "
            "(masked only where it is printed as part of the URL)"
        )
    plain = [r for r in refs if not r.namespace and r.name not in plan.secrets]
    if plain:
        return (
            f"the password of this URL comes from variable '{plain[0].name}', not from a "
            "secret (masked only where it is printed as part of the URL)"
        )
    return None


def secret_problems(plan: Plan, data: Any = None) -> list[Problem]:
    """``secret-in-variables`` and ``password-in-url`` warnings (see the module's docstring)."""
    raw = data if isinstance(data, dict) else {}
    out: list[Problem] = []
    variables = raw.get("variables")
    if isinstance(variables, dict):
        for name, value in variables.items():
            if not isinstance(value, str) or not value:
                continue
            path: Loc = ("variables", str(name))
            if any(_url_passwords(value)):
                continue  # a URL's password: password-in-url below says it once
            refs = references(value)
            sourced = [r for r in refs if r.namespace in ("env", "file")]
            if sourced and (looks_secret(str(name)) or any(map(_source_looks_secret, sourced))):
                out.append(
                    Problem(
                        "warning",
                        "secret-in-variables",
                        f"variable '{name}' takes {sourced[0].text}, which looks like a secret: "
                        "a variable's value is shown and stored in clear",
                        path=path,
                        hint=_HINT,
                    )
                )
            elif not refs and looks_secret(str(name)):
                out.append(
                    Problem(
                        "warning",
                        "secret-in-variables",
                        f"variable '{name}' looks like a secret written in clear: a variable's "
                        "value is shown and stored in clear",
                        path=path,
                        hint=_HINT,
                    )
                )
    for path, text in _strings({k: v for k, v in raw.items() if k != "secrets"}, ()):
        if "://" not in text or "@" not in text:
            continue
        for password in _url_passwords(text):
            message = _url_problem(password, plan)
            if message is not None:
                out.append(
                    Problem(
                        "warning",
                        "password-in-url",
                        message,
                        path=path,
                        hint="declare the password under 'secrets:' and write "
                        "`scheme://user:${db_password}@host`; a secret is masked wherever it "
                        "appears",
                    )
                )
                break
    return out
