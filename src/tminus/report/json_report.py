"""The report as JSON: the very data the Markdown and HTML renderers draw, shape
``tminus.report/1`` (docs/report.md describes every field). Times are ISO-8601 texts with their
offset, durations are seconds (floats), unknown values are null."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["render_json"]


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n"
