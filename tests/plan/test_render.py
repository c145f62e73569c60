"""The runbook renderer: Markdown and HTML runbooks of the example plans and of small plans."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from tminus.cli.app import cli
from tminus.plan.checks import CheckBase
from tminus.plan.loader import load_plan, load_plan_text
from tminus.plan.model import Plan
from tminus.plan.render import render_html, render_markdown
from tminus.plan.steps import BlueGreenStep, SshStep, StepBase
from tminus.plan.walk import iter_check_sites, resolve_check

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUICKSTART = EXAMPLES / "quickstart" / "plan.yaml"
PLAN_FILES = [QUICKSTART, *sorted((EXAMPLES / "seeds").glob("*.yaml"))]
FORMATS = ["md", "html"]


def _load(path: Path) -> Plan:
    result = load_plan(path)
    assert result.plan is not None, result.problems
    return result.plan


def _render(plan: Plan, fmt: str) -> str:
    return render_markdown(plan) if fmt == "md" else render_html(plan)


def _readable(text: str, fmt: str) -> str:
    """The rendered text as a reader sees it: markup escapes undone, whitespace collapsed."""
    if fmt == "html":
        text = html.unescape(re.sub(r"<[^>]+>", "", text))
    else:
        text = text.replace("\\|", "|").replace("\\*", "*").replace("&lt;", "<")
    return " ".join(text.split())


def _norm(text: str) -> str:
    return " ".join(text.split())


def _plan(data: dict[str, Any]) -> Plan:
    """A plan from a mapping, without the semantic check (the renderer must not need it)."""
    return Plan.model_validate(data)


# --- what every runbook must mention ---------------------------------------------------------


def _step_titles(plan: Plan) -> list[str]:
    """Titles of named steps: tasks, nested steps, undo steps, rollback steps, operations."""

    def walk(steps: list[StepBase]) -> list[StepBase]:
        out: list[StepBase] = []
        for s in steps:
            out.append(s)
            if isinstance(s, SshStep):
                out += s.before_batch + s.after_batch
            if isinstance(s, BlueGreenStep):
                out += s.deploy
            out += s.undo
        return out

    steps = [s for p in plan.phases for s in walk(list(p.steps)) + walk(list(p.rollback))]
    steps += [s for op in plan.operations.values() for s in walk(list(op.steps))]
    return [s.title() for s in steps if s.name or s.id]


def _levels(plan: Plan) -> list[str]:
    out: list[str] = []
    for site in iter_check_sites(plan):
        check = resolve_check(plan, site.check)
        assert isinstance(check, CheckBase)
        out += [str(c) for c in (check.warn, check.critical) if c is not None]
    return out


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", PLAN_FILES, ids=lambda p: p.stem)
def test_runbook_mentions_everything(path: Path, fmt: str) -> None:
    plan = _load(path)
    text = _readable(_render(plan, fmt), fmt)
    expected = {
        "phase": [p.name for p in plan.phases],
        "step": _step_titles(plan),
        "rollback step": [s.title() for p in plan.phases for s in p.rollback],
        "success metric": [m.name for m in plan.success_metrics],
        "role": list(plan.roles),
        "warn/critical": _levels(plan),
    }
    assert expected["phase"] and expected["step"]
    for what, needles in expected.items():
        missing = [n for n in needles if _norm(n) not in text]
        assert not missing, f"{path.name} ({fmt}): {what} missing: {missing}"


def test_quickstart_has_each_section() -> None:
    plan = _load(QUICKSTART)
    md = render_markdown(plan)
    headings = re.findall(r"^##+ (.+)$", md, flags=re.MULTILINE)
    for title in (
        "On one page",
        "Pre-deployment checklist",
        "Roles",
        "Timeline",
        "Phase 1: prepare",
        "Phase 4: cleanup",
        "Full rollback procedure",
        "Success metrics",
        "Watch schedule",
        "Communication plan",
        "Approval sign-off",
    ):
        assert title in headings
    # Sections the quickstart leaves empty are omitted.
    for title in (
        "Risk register",
        "Troubleshooting",
        "Common operations",
        "Emergency procedures",
        "Alert thresholds",
    ):
        assert title not in headings
    summary = md.split("## On one page", 1)[1].split("\n## ", 1)[0]
    assert "**Duration:** 1m10s of estimates" in summary
    assert "**Downtime:** planned 30s, allowed 1m" in summary
    assert "**Window:** not scheduled yet (TBD, UTC)" in summary
    checklist = md.split("## Pre-deployment checklist", 1)[1].split("\n## ", 1)[0]
    row = "| ☐ | Release notes reviewed | **reviewer** (a colleague) | confirm by hand |"
    assert row in checklist
    assert "automated" in checklist and 'contains "Python 3"' in checklist


# --- the T-timeline ---------------------------------------------------------------------------


def _clock(td: timedelta, seconds: bool) -> str:
    total = int(td.total_seconds())
    h, m, s = total // 3600, total // 60 % 60, total % 60
    return f"{h}:{m:02d}" + (f":{s:02d}" if seconds else "")


def _expected_timeline(plan: Plan) -> list[tuple[str, str]]:
    """(mark, event) for the quickstart: one window, then one phase delayed by ``after``."""
    ests = [p.estimate or timedelta() for p in plan.phases]
    seconds = any(e.total_seconds() % 60 for e in ests)
    rows: list[tuple[str, str]] = [("T-" + _clock(timedelta(), seconds), "Phase 1 Start")]
    t = timedelta()
    delay = ""
    for n, (phase, est) in enumerate(zip(plan.phases, ests, strict=True), 1):
        if phase.after is not None and n > 1:
            days = int(phase.after.total_seconds() // 86400)
            delay, t = f"{days}d", timedelta()
            rows.append((f"T+{delay}", f"Phase {n} Start"))
        elif phase.downtime and n > 1:
            rows.append((f"T+{_clock(t, seconds)}", f"Phase {n} Start"))
        t += est
        mark = f"T+{delay}+{_clock(t, seconds)}" if delay else f"T+{_clock(t, seconds)}"
        rows.append((mark, f"Phase {n} Complete"))
    return rows


@pytest.mark.parametrize("fmt", FORMATS)
def test_quickstart_t_timeline(fmt: str) -> None:
    plan = _load(QUICKSTART)
    out = _render(plan, fmt)
    if fmt == "html":
        out = html.unescape(re.search(r'<pre class="t-timeline">(.*?)</pre>', out, re.S)[1])  # type: ignore[index]
    lines = re.findall(r"^(T[-+]\S+) {2,}(Phase \d+ \w+) \((.*)\)$", out, flags=re.MULTILINE)
    assert [(mark, event) for mark, event, _ in lines] == _expected_timeline(plan)
    # The quickstart: 30s + 30s (downtime, maintenance) + 10s, then cleanup 7 days later.
    assert lines[0] == ("T-0:00:00", "Phase 1 Start", "prepare")
    assert ("T+0:00:30", "Phase 2 Start", "migrate; Maintenance Mode ON") in lines
    assert ("T+0:01:00", "Phase 2 Complete", "migrate; Maintenance Mode OFF") in lines
    assert lines[-2] == ("T+7d", "Phase 4 Start", "cleanup; 7d after phase 3")
    assert lines[-1] == ("T+7d+0:00:10", "Phase 4 Complete", "cleanup")


def test_timeline_in_minutes_like_the_seed() -> None:
    plan = _plan(
        {
            "name": "seedlike",
            "phases": [
                {"name": "Database", "estimate": "5m", "downtime": True, "steps": []},
                {"name": "Code", "estimate": "10m"},
                {"name": "Data", "estimate": "15m"},
                {"name": "Cleanup", "estimate": "5m", "after": "30d"},
            ],
        }
    )
    lines = [ln for ln in render_markdown(plan).splitlines() if re.match(r"T[-+]", ln)]
    assert lines == [
        "T-0:00      Phase 1 Start (Database; downtime starts)",
        "T+0:05      Phase 1 Complete (Database; downtime ends)",
        "T+0:15      Phase 2 Complete (Code)",
        "T+0:30      Phase 3 Complete (Data)",
        "T+30d       Phase 4 Start (Cleanup; 30d after phase 3)",
        "T+30d+0:05  Phase 4 Complete (Cleanup)",
    ]
    page = render_html(plan)
    chart = re.search(r"<svg.*?</svg>", page, re.S)
    assert chart is not None
    assert chart[0].count('<rect class="bar') >= 4  # one bar per phase (plus the legend)
    assert ">+30d</text>" in chart[0]  # the break marker's delay label
    assert 'class="bar downtime"' in chart[0]


# --- the rollback procedure -------------------------------------------------------------------

ROLLBACK_PLAN: dict[str, Any] = {
    "name": "order",
    "maintenance": {"flag_file": "/tmp/m.flag"},
    "targets": {"databases": {"db": {"kind": "sqlite", "url": "sqlite:///x.db"}}},
    "phases": [
        {
            "name": "one",
            "steps": [
                {"kind": "maintenance", "action": "on", "name": "Maint on"},
                {
                    "kind": "migrate",
                    "name": "Schema up",
                    "database": "db",
                    "tool": "command",
                    "up": "migrate up",
                    "down": "migrate down",
                },
                {
                    "kind": "run",
                    "name": "Step A",
                    "command": "a",
                    "undo": [{"kind": "run", "name": "Undo A", "command": "ua"}],
                },
            ],
            "rollback": [{"kind": "run", "name": "Phase one rollback", "command": "rb1"}],
        },
        {
            "name": "two",
            "steps": [
                {
                    "kind": "run",
                    "name": "Step B",
                    "command": "b",
                    "undo": [{"kind": "run", "name": "Undo B", "command": "ub"}],
                },
                {
                    "kind": "run",
                    "name": "Step C",
                    "command": "c",
                    "undo": [
                        {"kind": "run", "name": "Undo C1", "command": "uc1"},
                        {"kind": "run", "name": "Undo C2", "command": "uc2"},
                    ],
                },
                {"kind": "traffic", "name": "Shift", "router": "r", "weights": {"green": 100}},
            ],
        },
    ],
}


def test_full_rollback_runs_in_engine_order() -> None:
    md = render_markdown(_plan(ROLLBACK_PLAN))
    section = md.split("## Full rollback procedure", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if re.match(r"\| \d+ \|", ln)]
    order = [
        "traffic back to the weights before",  # phase two: automatic, newest step first
        "Undo C1",
        "Undo C2",
        "Undo B",
        "Phase one rollback",  # phase one: its rollback steps first
        "Undo A",
        "`migrate down`",  # automatic migrate down
        "Maintenance mode OFF",  # automatic maintenance off
    ]
    assert len(rows) == len(order)
    for row, needle in zip(rows, order, strict=True):
        assert needle in row, (needle, row)
    assert rows[0].startswith("| 1 | Phase 2: two |")
    assert rows[-1].startswith("| 8 | Phase 1: one |")


def test_migrate_restore_compensation() -> None:
    data = yaml.safe_load(yaml.safe_dump(ROLLBACK_PLAN))
    data["phases"][0]["steps"][1] |= {"on_rollback": "restore", "backup": "db_backup"}
    md = render_markdown(_plan(data))
    section = md.split("## Full rollback procedure", 1)[1]
    assert "Restore `db` from backup `db_backup`" in section
    assert "`migrate down`" not in section


# --- HTML ------------------------------------------------------------------------------------

_VOID = {"meta", "br", "hr", "img", "link", "input", "col", "wbr", "source", "area", "base"}


class _Balance(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.seen: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append(tag)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()


@pytest.mark.parametrize("path", PLAN_FILES, ids=lambda p: p.stem)
def test_html_is_balanced_and_self_contained(path: Path) -> None:
    plan = _load(path)
    page = render_html(plan)
    assert page.startswith("<!doctype html>")
    parser = _Balance()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    for tag in ("html", "head", "style", "body", "main", "svg", "table"):
        assert tag in parser.seen
    assert parser.seen.count("section") >= len(plan.phases) + 3
    lowered = page.lower()
    assert "<link" not in lowered and "<script" not in lowered and "<iframe" not in lowered
    assert "@import" not in lowered and "url(" not in lowered
    assert not re.search(r"\ssrc\s*=", lowered)
    assert "@media print" in page and "break-before: page" in page
    if path == QUICKSTART:
        assert "http://" not in page and "https://" not in page
    # Every phase starts a new page when printed.
    assert len(re.findall(r'<section id="phase-\d+" class="page-break">', page)) == len(plan.phases)


def test_html_escapes_user_text() -> None:
    plan = _plan(
        {
            "name": "esc",
            "description": "R&D <b>bold</b>",
            "phases": [
                {
                    "name": "<script>alert(1)</script>",
                    "steps": [{"kind": "run", "name": 'Say "hi" & <bye>', "command": "echo '<x>'"}],
                }
            ],
        }
    )
    page = render_html(plan)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "R&amp;D &lt;b&gt;bold&lt;/b&gt;" in page
    assert "Say &quot;hi&quot; &amp; &lt;bye&gt;" in page
    parser = _Balance()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    md = render_markdown(plan)
    outside_code = re.sub(r"```.*?```", "", md, flags=re.S)  # code blocks show text literally
    assert "<script>" not in outside_code
    assert "&lt;script>alert(1)&lt;/script>" in outside_code


# --- secrets ---------------------------------------------------------------------------------

SECRET_PLAN = """
tminus: 1
name: secretive
secrets:
  token: ${env:TMINUS_RENDER_TEST_SECRET}
variables:
  host: example.internal
notifications:
  channels:
    hook:
      kind: webhook
      url: https://hooks.example.internal/${token}
      headers: {Authorization: "Bearer ${token}"}
  rules:
    - when: failure
      channels: [hook]
      message: deploy failed
checks:
  api_up:
    source: http
    url: https://${host}/health
    headers: {Authorization: "Bearer ${token}"}
    expect: "< 1s"
    warn: "> 500ms"
    critical: "> 2s"
phases:
  - name: deploy
    estimate: 1m
    steps:
      - kind: run
        name: Call the API
        command: 'curl -H "Authorization: Bearer ${token}" https://${host}/deploy'
        env: {TOKEN: "${token}"}
    verify: [api_up]
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_secret_values_never_appear(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-VALUE-9f2a"
    monkeypatch.setenv("TMINUS_RENDER_TEST_SECRET", secret)
    result = load_plan_text(SECRET_PLAN, "secretive.yaml")
    assert result.plan is not None, result.problems
    out = _render(result.plan, fmt)
    assert secret not in out
    assert secret not in html.unescape(out)
    # References are printed as written, never resolved.
    assert "${token}" in html.unescape(out)
    assert "https://${host}/deploy" in html.unescape(out)  # variables are not resolved either
    assert "hooks.example.internal" not in out  # channel URLs (credentials) are never printed
    assert "> 500ms" in html.unescape(out) and "> 2s" in html.unescape(out)


# --- optional sections -----------------------------------------------------------------------

FULL_SECTIONS: dict[str, Any] = {
    "name": "full",
    "approvals": {"required": ["lead"], "separation_of_duties": True},
    "roles": {"lead": {"people": ["Ana"], "contact": "ana@example.org"}, "ops": {"people": "Bo"}},
    "risks": [
        {
            "name": "Slow queries",
            "likelihood": "high",
            "impact": "low",
            "mitigation": "Warm the cache",
        }
    ],
    "rollback_triggers": [
        {
            "name": "Errors spike",
            "check": {"source": "command", "command": "errs", "critical": "> 5%"},
        }
    ],
    "contacts": {
        "emergency": [{"name": "Ana", "role": "lead", "contact": "+1 555"}],
        "escalation": ["Team lead", "CTO"],
    },
    "operations": {
        "emergency_stop": {
            "description": "Stop all jobs",
            "dangerous": True,
            "confirm": "Really stop?",
            "params": {"job": {"type": "str", "required": True}},
            "steps": [{"kind": "run", "name": "Kill jobs", "command": "pkill jobs"}],
        }
    },
    "troubleshooting": [
        {
            "title": "Lock held",
            "symptom": "Could not acquire lock",
            "fix": "Clear the stale lock",
            "operation": "emergency_stop",
        }
    ],
    "maintenance_windows": [
        {
            "name": "Weekly",
            "schedule": "Sun 03:00",
            "tasks": ["Vacuum"],
            "pre_checklist": ["Announce"],
        }
    ],
    "health": [{"source": "command", "name": "Disk", "command": "df", "warn": "> 80%"}],
    "phases": [
        {
            "name": "rollout",
            "estimate": "20m",
            "risk": "high",
            "owner": "ops",
            "on_failure": "pause",
            "steps": [
                {"kind": "approve", "name": "Go/no-go", "roles": ["lead"]},
                {
                    "kind": "canary",
                    "name": "Canary",
                    "router": "web",
                    "stable": "blue",
                    "canary": "green",
                    "steps": [
                        {"weight": 5, "pause": "10m"},
                        {"weight": 25, "pause": "manual"},
                        {"weight": 100},
                    ],
                },
                {
                    "kind": "flag",
                    "name": "Flag on",
                    "store": "flags",
                    "flag": "new_ui",
                    "percentage": 10,
                },
                {
                    "kind": "blue_green",
                    "name": "Switch",
                    "router": "web",
                    "active": "blue",
                    "idle": "green",
                    "deploy": [{"kind": "run", "name": "Deploy green", "command": "deploy green"}],
                },
                {
                    "kind": "ssh",
                    "name": "Restart",
                    "on": "web",
                    "command": "systemctl restart app",
                    "batch": [1, "25%"],
                },
            ],
        }
    ],
}


def test_optional_sections_when_present() -> None:
    plan = _plan(FULL_SECTIONS)
    md = render_markdown(plan)
    headings = re.findall(r"^##+ (.+)$", md, flags=re.MULTILINE)
    for title in (
        "Approvals",
        "Risk register",
        "Rollback triggers",
        "Contacts and escalation",
        "Quick reference",
        "Common operations",
        "Emergency stop",
        "Troubleshooting",
        "Maintenance windows",
        "Weekly",
        "Health checks",
        "Alert thresholds",
    ):
        assert title in headings, title
    text = _readable(md, "md")
    assert "**Separation of duties:** yes" in md
    assert "5% (hold 10m) → 25% (manual promotion) → 100%" in text
    assert "`new_ui` in `flags` → 10%" in md
    assert "batches 1 → 25%" in text
    assert "Deploy green" in text  # a nested blue/green deploy step
    assert "dangerous, asks: “Really stop?”" in text
    assert "| Errors spike | output of errs | exit 0; output > 5% is CRITICAL | rollback |" in md
    # Sign-off: one row per approval role, blank Name / Signature / Date.
    sign = md.split("## Approval sign-off", 1)[1]
    assert "| **lead** |  |  |  |" in sign and "**ops**" not in sign
    # The rollback procedure has the engine's automatic compensations.
    rollback = md.split("## Full rollback procedure", 1)[1].split("\n## ", 1)[0]
    assert "100% of traffic back to stable `blue`" in rollback
    assert "switch back to `blue`" in rollback
    html_page = render_html(plan)
    assert "Slow queries" in html_page and "Clear the stale lock" in html_page


def test_minimal_plan_omits_empty_sections() -> None:
    plan = _plan(
        {
            "name": "tiny",
            "phases": [{"name": "only", "steps": [{"kind": "run", "command": "true"}]}],
        }
    )
    md = render_markdown(plan)
    headings = re.findall(r"^##+ (.+)$", md, flags=re.MULTILINE)
    assert headings == [
        "On one page",
        "Overview",
        "Quick reference",
        "Timeline",
        "Deployment phases",
        "Phase 1: only",
    ]
    assert "(no estimate)" not in md and "no estimate" in md
    page = render_html(plan)
    assert "no estimates: equal widths" in page


# --- CLI --------------------------------------------------------------------------------------


def test_cli_render_markdown_to_stdout() -> None:
    result = CliRunner().invoke(cli, ["render", str(QUICKSTART)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# quickstart\n")
    assert "T-0:00:00" in result.output


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_render_writes_file(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / f"runbook.{fmt}"
    args = ["render", str(QUICKSTART), "--format", fmt, "-o", str(out), "--unresolved"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    plan = _load(QUICKSTART)
    expected = (
        render_markdown(plan, str(QUICKSTART))
        if fmt == "md"
        else render_html(plan, str(QUICKSTART))
    )
    assert text == expected
    assert ("<!doctype html>" in text) == (fmt == "html")


def test_operations_split_into_common_and_emergency_with_commands() -> None:
    md = render_markdown(_load(EXAMPLES / "seeds" / "archive-import.yaml"), "ai.yaml")
    common = md.split("## Common operations", 1)[1].split("\n## ", 1)[0]
    emergency = md.split("## Emergency procedures", 1)[1].split("\n## ", 1)[0]
    assert "### Emergency stop" in emergency and "### Emergency stop" not in common
    assert "### Import artist shows" in common
    assert "tminus op run ai.yaml import_artist_shows --param artist=…" in common
    assert "tminus op run ai.yaml emergency_stop --yes" in emergency
    quick = md.split("## Quick reference", 1)[1].split("\n## ", 1)[0]
    assert "tminus op run ai.yaml emergency_rollback" in quick
    assert "tminus health ai.yaml" in quick and "Chris Majorossy" in quick


def test_seed_runbook_has_every_operator_section() -> None:
    md = render_markdown(_load(EXAMPLES / "seeds" / "archive-import.yaml"))
    headings = re.findall(r"^## (.+)$", md, flags=re.MULTILINE)
    for title in (
        "Quick reference",
        "Common operations",
        "Troubleshooting",
        "Emergency procedures",
        "Risk register",
        "Rollback triggers",
        "Contacts and escalation",
        "Maintenance windows",
        "Health checks",
    ):
        assert title in headings, title
