"""Paths on hosts stay inside the directory they name: an ``upload`` ``dest`` and a
``release`` ``path`` (the deploy root) may not have a ``..`` component, nor may a release's
``shared`` entries (checked with them in validate). Written in the plan, ``tminus check``
rejects it; produced by interpolation (a variable's value), the step refuses it at run time
before any host is touched."""

from __future__ import annotations

import re

__all__ = ["dotdot_problem", "literal_dotdot"]

_REF = re.compile(r"\$\$\{|\$\{[^{}]*\}")


def dotdot_problem(value: str, what: str) -> str | None:
    """Why the resolved path ``value`` may lead outside what it names, or None."""
    if ".." in value.split("/"):
        return (
            f"{what} '{value}' has a '..' component: it could lead outside the directory it names"
        )
    return None


def literal_dotdot(template: str) -> bool:
    """Does ``template`` have a ``..`` component written out (not from a ``${…}`` value)?"""
    text = _REF.sub(lambda m: "$${" if m.group(0) == "$${" else "\0", template)
    return ".." in text.split("/")
