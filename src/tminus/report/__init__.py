"""``tminus report``: a deploy's after-action report (planned versus actual, downtime, people,
rollbacks, success metrics, the watch, notifications) as Markdown, HTML or JSON; and
``tminus signoff``, the day-1/day-7 sign-offs it shows.

Parts, one module each: :mod:`.data` gathers the report (with :mod:`.timeline` and
:mod:`.sections`, masked by :mod:`.mask`), :mod:`.svg` draws its charts, :mod:`.md`,
:mod:`.html` and :mod:`.json_report` render it, :mod:`.signoff` records sign-offs. The package
reads the store and the plan; it imports nothing of the engine."""

from __future__ import annotations

from typing import Any

__all__ = ["FORMATS", "render"]

FORMATS = ("md", "html", "json")


def render(report: dict[str, Any], fmt: str) -> str:
    """``report`` (from :func:`tminus.report.data.build_report`) in format ``fmt``."""
    if fmt == "html":
        from tminus.report.html import render_html

        return render_html(report)
    if fmt == "json":
        from tminus.report.json_report import render_json

        return render_json(report)
    from tminus.report.md import render_md

    return render_md(report)
