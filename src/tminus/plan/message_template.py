"""Notification message templates: Jinja2 in a sandbox, with a documented set of variables.

A rule's ``message`` is a Jinja2 template (``{{ phase.name }}``, ``{% if failed_step %}``)
rendered in :class:`jinja2.sandbox.SandboxedEnvironment`, text only (no autoescape), with
:class:`jinja2.StrictUndefined`: a name that is not one of :data:`VARIABLES` is an error of
``tminus check`` (:func:`template_problems`), never a surprise at run time. ``${…}``
references keep working: each one is resolved (and masked) on its own and put into the template
as a value, never as template text, so a value holding ``{{`` is data and nothing a template
prints is resolved again.

This module is the plan's side (the names, the sandbox, the static check); the values are
made by :mod:`tminus.engine.messages`. Jinja2 is imported only when a message uses it
(``tminus check`` of a plan without templates never imports it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "NAMESPACES",
    "VARIABLES",
    "is_template",
    "render",
    "template_problems",
]

#: The variables of a message template, each with its attributes (a namespace) or None.
NAMESPACES: dict[str, tuple[str, ...]] = {
    "deploy": ("id", "plan", "environment", "state", "link", "version"),
    "phase": ("name", "number", "of"),
    "window": ("start", "end", "timezone"),
}
VARIABLES: tuple[str, ...] = (
    "deploy",
    "phase",
    "window",
    "eta",
    "downtime_so_far",
    "failed_step",
    "reason",
    "started_by",
    "when",
    "occurrence",
    "vars",
)

_JINJA = re.compile(r"\{\{|\{%|\{#")
_REF = re.compile(r"\$\$\{|\$\{[^{}]*\}")


def is_template(text: str) -> bool:
    """Does ``text`` use Jinja2 syntax (``{{``, ``{%``, ``{#``)?"""
    return bool(_JINJA.search(text))


def _env() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(
        autoescape=False, undefined=StrictUndefined, keep_trailing_newline=False
    )


def _split_refs(text: str, value: Callable[[str], str]) -> tuple[str, dict[str, str]]:
    """``text`` with each ``${…}`` (and ``$${``) replaced by a template variable holding its
    value (``value(reference)``), and those variables."""
    refs: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        name = f"_ref{len(refs)}"
        refs[name] = "${" if m.group(0) == "$${" else value(m.group(0))
        return "{{ " + name + " }}"

    return _REF.sub(sub, text), refs


def render(template: str, variables: Mapping[str, Any], ref: Callable[[str], str]) -> str:
    """Render ``template`` with ``variables``; each ``${…}`` is ``ref(reference)``. Raises
    what Jinja2 raises (a syntax error, an undefined name, a sandbox violation)."""
    source, refs = _split_refs(template, ref)
    return str(_env().from_string(source).render({**variables, **refs}))


def _names(ast: Any) -> list[tuple[str, str | None, int]]:
    """Every (name, attribute or None, line) a template reads from its context."""
    from jinja2 import nodes

    out: list[tuple[str, str | None, int]] = []
    assigned: set[str] = set()
    for n in ast.find_all((nodes.Assign, nodes.For, nodes.Macro, nodes.With)):
        for t in n.find_all(nodes.Name):
            if t.ctx in ("store", "param"):
                assigned.add(t.name)
    seen: set[int] = set()
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        inner = node.node
        if isinstance(inner, nodes.Name) and inner.ctx == "load" and inner.name not in assigned:
            if isinstance(node, nodes.Getattr):
                attr: str | None = node.attr
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                attr = node.arg.value
            else:
                attr = None
            if attr is not None:
                out.append((inner.name, attr, node.lineno))
                seen.add(id(inner))
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name not in assigned and id(name) not in seen:
            out.append((name.name, None, name.lineno))
    return out


def template_problems(text: str, plan_vars: Iterable[str]) -> list[tuple[str, str | None]]:
    """What is wrong with a message template, as (message, hint): a syntax error, a name that
    is not a template variable, an attribute a namespace does not have (with a did-you-mean
    hint). ``plan_vars``: the names under ``vars``."""
    from tminus.plan.problems import did_you_mean

    if not is_template(text):
        return []
    from jinja2 import TemplateSyntaxError

    source, _refs = _split_refs(text, lambda r: "")
    try:
        ast = _env().parse(source)
    except TemplateSyntaxError as exc:
        return [
            (
                f"message template, line {exc.lineno}: {exc.message}",
                "see docs/notifications.md#message-templates",
            )
        ]
    known_vars = set(plan_vars)
    out: list[tuple[str, str | None]] = []
    for name, attr, line in _names(ast):
        if name.startswith("_ref"):
            continue
        if name not in VARIABLES:
            hint = did_you_mean(name, VARIABLES) or "variables: " + ", ".join(VARIABLES)
            out.append((f"message template, line {line}: unknown variable '{name}'", hint))
            continue
        if attr is None:
            continue
        if name == "vars":
            if attr not in known_vars:
                hint = did_you_mean(attr, known_vars) or "define it under 'variables'"
                out.append(
                    (f"message template, line {line}: undefined variable 'vars.{attr}'", hint)
                )
            continue
        attrs = NAMESPACES.get(name)
        if attrs is None:
            out.append(
                (
                    f"message template, line {line}: '{name}' is text, it has no '{attr}'",
                    f"write {{{{ {name} }}}}",
                )
            )
        elif attr not in attrs:
            hint = did_you_mean(attr, attrs) or f"{name} has: " + ", ".join(attrs)
            out.append((f"message template, line {line}: '{name}' has no '{attr}'", hint))
    return list(dict.fromkeys(out))
