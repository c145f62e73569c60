"""libyaml's fast path and the pure-Python parser agree on data and on every position."""

from __future__ import annotations

from pathlib import Path

import pytest

from tminus.plan import loader

ROOT = Path(__file__).resolve().parents[2]
PLANS = sorted((ROOT / "examples").rglob("*.yaml"))


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.name)
def test_fast_and_careful_parsers_agree(plan: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = plan.read_text()
    fast = loader._parse_fast(text, str(plan))
    assert fast is not None, "libyaml should parse every example"
    monkeypatch.setattr(loader, "_FastLoader", None)
    data, src, problems = loader.parse_yaml(text, str(plan))
    assert problems == []
    assert fast[0] == data
    assert fast[1].values == src.values
    assert fast[1].keys == src.keys


def test_a_yaml_error_still_gets_the_careful_message() -> None:
    result = loader.load_plan_text("name: x\nphases:\n  - name: a\n   - name: b\n", "p.yaml")
    assert [(p.code, p.line) for p in result.problems] == [("yaml", 4)]
