"""The JSON Schema of the plan format."""

from __future__ import annotations

from typing import Any

from tminus.plan.model import Plan

__all__ = ["plan_json_schema"]


def plan_json_schema() -> dict[str, Any]:
    schema = Plan.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://tminus.dev/schema/plan-v1.json"
    schema["title"] = "tminus plan"
    return schema
