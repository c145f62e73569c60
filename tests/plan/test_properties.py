"""Property tests: random mutations of valid plans never raise, they become clean problems."""

from __future__ import annotations

import copy
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tminus.cli.app import cli
from tminus.plan.checks import CHECK_SOURCES
from tminus.plan.loader import LoadResult, load_plan_text, parse_yaml
from tminus.plan.problems import format_problems, problems_json
from tminus.plan.steps import STEP_KINDS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUICKSTART = EXAMPLES / "quickstart" / "plan.yaml"
SEED_FILES = sorted((EXAMPLES / "seeds").glob("*.yaml"))


def _base_texts() -> list[str]:
    texts = [QUICKSTART.read_text(encoding="utf-8")]
    for seed in SEED_FILES:
        try:
            text = seed.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):  # being written right now; skip it
            continue
        data, _, problems = parse_yaml(text, seed.name)
        if not problems and isinstance(data, dict):
            texts.append(text)
    return texts


BASE_TEXTS = _base_texts()
BASE_DATA = [parse_yaml(t)[0] for t in BASE_TEXTS]

_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")


def yaml_line_count(text: str) -> int:
    """Lines as YAML counts them (its marks treat \\x85, U+2028 and U+2029 as breaks)."""
    return len(_BREAK.split(text))


def assert_clean(result: Any, text: str) -> None:
    assert isinstance(result, LoadResult)
    lines = yaml_line_count(text)
    for p in result.problems:
        assert p.severity in ("error", "warning")
        assert p.file == "plan.yaml", p
        assert p.code and p.message, p
        if text:
            assert p.line is not None, p
            assert 1 <= p.line <= lines, (p, lines)
            assert p.column is None or p.column >= 1, p
        p.format()
    if result.ok:
        assert result.plan is not None
    else:
        assert any(p.severity == "error" for p in result.problems) or result.plan is None
    json.loads(problems_json(result.problems, ok=result.ok))
    format_problems(result.problems)


# --- mutations -------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.sampled_from([10**400, -(10**400)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["on", "off", "yes", "no", "5m", "1h30m", "< 0.01", "${x}", "TBD", ""])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


def _paths(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            out.append((*path, k))
            out.extend(_paths(v, (*path, k)))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out.append((*path, i))
            out.extend(_paths(v, (*path, i)))
    return out


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        data = data[p]
    return data


def _near_miss(draw: Any, word: str) -> str:
    if not word:
        return draw(st.text(min_size=1, max_size=8))
    i = draw(st.integers(0, len(word) - 1))
    how = draw(st.sampled_from(["drop", "double", "swap", "upper", "random"]))
    if how == "drop":
        return word[:i] + word[i + 1 :] or "x"
    if how == "double":
        return word[:i] + word[i] + word[i:]
    if how == "swap" and len(word) > 1:
        j = min(i + 1, len(word) - 1)
        chars = list(word)
        chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)
    if how == "upper":
        return word.upper()
    return draw(st.text(min_size=1, max_size=10))


@st.composite
def mutate_data(draw: Any, data: Any) -> Any:
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _get(data, path[:-1]), path[-1]
        op = draw(st.sampled_from(["delete", "rename", "replace", "duplicate", "tag"]))
        if op == "delete":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            new = _near_miss(draw, str(key))
            parent[new] = parent.pop(key)
        elif op == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == "tag":
            tag_paths = [p for p in paths if p[-1] in ("kind", "source")]
            if tag_paths:
                tp = draw(st.sampled_from(tag_paths))
                _get(data, tp[:-1])[tp[-1]] = draw(
                    st.sampled_from([*STEP_KINDS, *CHECK_SOURCES])
                    | st.text(max_size=8)
                    | st.builds(_near_miss_text, st.sampled_from(STEP_KINDS))
                )
        else:
            parent[key] = draw(values)
    return data


def _near_miss_text(word: str) -> str:
    return word[:-1] if len(word) > 2 else word + "x"


@st.composite
def mutated_text(draw: Any) -> str:
    i = draw(st.integers(0, len(BASE_TEXTS) - 1))
    if draw(st.booleans()):
        text = yaml.safe_dump(
            draw(mutate_data(BASE_DATA[i])), sort_keys=False, allow_unicode=True, width=1000
        )
    else:
        text = BASE_TEXTS[i]
    for _ in range(draw(st.integers(0, 2))):
        how = draw(st.sampled_from(["insert", "truncate", "none"]))
        pos = draw(st.integers(0, len(text)))
        if how == "insert":
            snippet = draw(
                st.text(max_size=10)
                | st.sampled_from(["\t", ": ", "- ", '"', "'", "{", "[", "&a ", "*a", "\n  ", "#"])
            )
            text = text[:pos] + snippet + text[pos:]
        elif how == "truncate":
            text = text[:pos]
    return text


# --- properties ------------------------------------------------------------------------------


def test_the_quickstart_loads_without_problems() -> None:
    result = load_plan_text(BASE_TEXTS[0], "plan.yaml")
    assert result.ok
    assert result.problems == []


def test_unmutated_yaml_round_trip_of_every_base_loads_like_the_original() -> None:
    for text, data in zip(BASE_TEXTS, BASE_DATA, strict=True):
        dumped = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)
        original = load_plan_text(text, "plan.yaml")
        again = load_plan_text(dumped, "plan.yaml")
        assert again.ok == original.ok
        assert [p.code for p in again.problems] == [p.code for p in original.problems]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_text())
def test_mutated_plans_give_clean_problems(text: str) -> None:
    result = load_plan_text(text, "plan.yaml")
    assert_clean(result, text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_arbitrary_text_gives_clean_problems(text: str) -> None:
    assert_clean(load_plan_text(text, "plan.yaml"), text)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_text(), min_size=1, max_size=3))
def test_check_command_on_mutated_files_never_crashes(texts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, text in enumerate(texts):
            f = Path(tmp) / f"plan{i}.yaml"
            f.write_text(text, encoding="utf-8", errors="surrogatepass")
            files.append(str(f))
        result = CliRunner().invoke(cli, ["check", *files], catch_exceptions=True)
        assert result.exit_code in (0, 2), result.output
        assert "Traceback" not in result.output
        assert "internal error" not in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        expect_ok = all(load_plan_text(t, f).ok for t, f in zip(texts, files, strict=True))
        assert (result.exit_code == 0) == expect_ok
