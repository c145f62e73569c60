"""Render a plan as the runbook a team would otherwise write by hand (Markdown or HTML)."""

from __future__ import annotations

from tminus.plan.model import Plan

__all__ = ["render_html", "render_markdown"]


def render_markdown(plan: Plan) -> str:
    lines = [f"# {plan.name}", ""]
    for i, phase in enumerate(plan.phases, 1):
        lines.append(f"## Phase {i}: {phase.name}")
    return "\n".join(lines) + "\n"


def render_html(plan: Plan) -> str:
    return f"<!doctype html><title>{plan.name}</title>\n"
