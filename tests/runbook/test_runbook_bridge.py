"""The runbook made for the bridge (issue #18): resolved values, real times, readable checks,
tick boxes, the one-page summary, the compact mode, the manual fallback and per-phase partial
rollback, and one description per step kind. Through the real CLI on the seed plans."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tminus.cli.app import cli
from tminus.plan._runbook_values import RunbookValues
from tminus.plan.describe import AS_WRITTEN, describe_step, plain
from tminus.plan.loader import load_plan, load_plan_text
from tminus.plan.model import Plan
from tminus.plan.render import RenderOptions, render_markdown
from tminus.plan.steps import ReleaseStep

SEEDS = Path(__file__).resolve().parents[2] / "examples" / "seeds"
ARCHIVE = SEEDS / "archive-import.yaml"
MEDIA = SEEDS / "media-repository.yaml"
SVETU = SEEDS / "svetu-unified-attributes.yaml"
ALL = sorted(SEEDS.glob("*.yaml"))


def _render(*args: str, env: dict[str, str] | None = None) -> str:
    res = CliRunner().invoke(cli, ["render", *args], env=env)
    assert res.exit_code == 0, res.output
    return res.output


def _load(path: Path) -> Plan:
    result = load_plan(path)
    assert result.plan is not None, result.problems
    return result.plan


# --- 1. resolved by default -------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_every_seed_is_resolved_by_default(path: Path) -> None:
    out = _render(str(path), "--format", "html")
    assert "${" not in out
    assert str(path.resolve().parent) in out or "plan_dir" not in path.read_text()


def test_unresolved_keeps_references_and_var_is_used() -> None:
    raw = _render(str(ARCHIVE), "--unresolved")
    assert "${magento_root}" in raw
    assert "nothing in it was resolved" in raw
    resolved = _render(str(ARCHIVE), "--var", "magento_root=/srv/magento-42")
    assert "cd /srv/magento-42 && " in resolved
    assert "${" not in resolved
    assert "values resolved as in a dry run" in resolved


def test_an_undeclared_var_is_a_clear_error() -> None:
    res = CliRunner().invoke(cli, ["render", str(ARCHIVE), "--var", "nope=1"])
    assert res.exit_code == 2
    assert "undeclared variable: nope" in res.output
    assert "Traceback" not in res.output


def test_secrets_never_appear_resolved_or_not() -> None:
    """A secret read from the environment and a password in a URL given with --var are
    shown as ***.

    Mutation: in ``RunbookValues.__call__`` return ``_REF.sub(sub, text)`` without
    ``self._r.mask(...)``: the URL's password is printed and this test fails."""
    plan_text = """
name: s
environment: production
secrets:
  db_url: ${env:RB_TEST_DB_URL}
variables:
  dsn: postgresql://db.internal/app
targets:
  databases:
    app: {kind: postgres, url: "${db_url}"}
phases:
  - name: One
    steps:
      - name: Show them
        kind: run
        command: echo ${db_url} ${dsn}
"""
    result = load_plan_text(plan_text, "s.yaml")
    assert result.plan is not None, result.problems
    given = {"dsn": "postgresql://app:var-hunter2@db.internal/app"}  # as --var gives it
    values = RunbookValues(
        result.plan, "s.yaml", given, env={"RB_TEST_DB_URL": "env-hunter2-secret"}
    )
    out = render_markdown(result.plan, "s.yaml", RenderOptions(values=values))
    assert "hunter2" not in out
    assert "echo *** postgresql://app:***@db.internal/app" in out
    # as written (--unresolved): a password written in clear in a URL is masked too
    clear = plan_text.replace("echo ${db_url} ${dsn}", "psql postgresql://app:clear-hunter2@h/app")
    result = load_plan_text(clear, "s.yaml")
    assert result.plan is not None, result.problems
    written = render_markdown(result.plan, "s.yaml")
    assert "hunter2" not in written and "psql postgresql://app:***@h/app" in written


# --- 2. real times ----------------------------------------------------------------------------


def test_real_times_in_the_window_zone_and_a_second_zone() -> None:
    out = _render(str(ARCHIVE), "--start", "2026-02-07T02:00", "--tz", "Europe/Belgrade")
    assert "Time (UTC)" in out and "Time (Europe/Belgrade)" in out
    # the 24-hour notice, the window, a phase end, the 30-day cleanup, a watch period
    assert re.search(r"T-1d \| Fri 2026-02-06 02:00 \| Fri 2026-02-06 03:00 \| Notice to", out)
    assert re.search(r"T-0:00 \| Sat 2026-02-07 02:00 \| Sat 2026-02-07 03:00 \| Window opens", out)
    assert "| T+0:05 | Sat 2026-02-07 02:05 |" in out
    # 30 days after phase 4 ends (T+0:35), as the engine starts a delayed phase
    assert re.search(r"T\+30d \| Mon 2026-03-09 02:35 .*Phase 5 Start", out)
    assert re.search(r"Watch: Day 1: error logs every 30 minutes — every 30m for 1d", out)


def test_an_unknown_zone_or_start_is_a_clear_error() -> None:
    for args in (["--tz", "Mars/Olympus"], ["--start", "next tuesday"]):
        res = CliRunner().invoke(cli, ["render", str(ARCHIVE), *args])
        assert res.exit_code == 2, res.output
        assert res.output.startswith("error: ") and "Traceback" not in res.output


# --- 3. every check readable ------------------------------------------------------------------


def test_checks_say_what_they_expect_in_words() -> None:
    out = _render(str(MEDIA))
    assert "| Unauthenticated media upload is refused | POST `http" in out
    assert "HTTP 401 or 403 expected" in out
    archive = _render(str(ARCHIVE))
    assert "latency > 1s is CRITICAL" in archive
    assert "output > 0 is WARN" in archive
    assert "exit 0, output == 6" in archive
    assert "file count > 0" in archive
    assert "no row or file count lower" in archive
    proofile = _render(str(SEEDS / "proofile-web.yaml"))
    assert 'body contains ""status": "ok""' in proofile
    for text in (out, archive, proofile):
        assert not re.search(r"\b(sql|file_count|http|command) check\b", text)


# --- 4. fit for the bridge --------------------------------------------------------------------


def test_tasks_items_and_notices_have_boxes_and_done_columns() -> None:
    out = _render(str(ARCHIVE))
    summary = out.split("## Overview")[0]
    assert "## On one page" in summary
    for part in ("**Window:**", "**Downtime:**", "**Go / no-go:**", "**Rollback triggers:**"):
        assert part in summary
    assert "**Who to call:**" in summary and "Chris Majorossy" in summary
    assert "|  | # | Task | What it does | Est., owner | Done at | By |" in out
    assert "| ☐ | 1 | **Record table row counts" in out
    assert "|  | Item | Owner | How | Done at | By |" in out
    assert "|  | When | Channels | Audience | Message | Done at | By |" in out
    assert out.count("| ☐ |") > 60


def test_the_compact_runbook_is_much_shorter_and_keeps_the_essentials() -> None:
    full = _render(str(ARCHIVE))
    compact = _render(str(ARCHIVE), "--compact")
    assert len(compact) < len(full) / 2
    for kept in ("## On one page", "Phase 5: Cleanup", "tminus rollback DEPLOY --phase 1"):
        assert kept in compact
    assert "## Troubleshooting" not in compact


def test_audiences_are_not_repeated() -> None:
    out = _render(str(MEDIA))
    for row in out.splitlines():
        cells = [c.strip() for c in row.split("|")]
        for cell in cells:
            parts = [p.strip() for p in cell.split(",")]
            if len(parts) > 1 and all(p.isidentifier() for p in parts):
                assert len(parts) == len(set(parts)), row


# --- 5. manual fallback and partial rollback ----------------------------------------------------


def test_fallback_commands_for_restore_release_and_routers() -> None:
    archive = _render(str(ARCHIVE))
    # seed 000's "mysql magento < backup….sql", with the backup's path pattern: the database
    # comes from $MAGENTO_DATABASE_URL, so its name (the backup's label) is a placeholder
    db = "<dbname-from-$MAGENTO_DATABASE_URL>"
    assert (
        f"gunzip -c .tminus/rehearsal/archive-import/magento/backups/db/<YYYYMMDDTHHMMSSZ>-{db}"
        f'/dump.sql.gz | mariadb {db}  # connect as "$MAGENTO_DATABASE_URL" says'
    ) in archive
    assert "tminus rollback DEPLOY --phase 3" in archive
    assert "**Manual fallback**" in archive
    svetu = _render(str(SVETU))
    assert re.search(r"pg_restore --clean --if-exists .*-d \"\$DATABASE_URL\" \S+/dump", svetu)
    assert re.search(r"# edit \S+: upstream \w+ \{ server ", svetu)
    assert " -s reload" in svetu or "nginx -t && " in svetu


# --- 6. one description per step kind ---------------------------------------------------------


def test_a_release_undo_is_described_as_the_engine_describes_it() -> None:
    """The runbook's automatic compensation of a release is the kind's own description of the
    rollback step the engine registers (steps/release.py), not a second wording."""
    text = """
name: r
environment: production
targets:
  hosts: {web1: {address: 127.0.0.1}}
phases:
  - name: Ship
    steps:
      - name: Release the app
        kind: release
        on: web1
        path: /srv/app
        source: ./build
        release_id: v2
"""
    result = load_plan_text(text, "r.yaml")
    assert result.plan is not None, result.problems
    step = result.plan.phases[0].steps[0]
    assert isinstance(step, ReleaseStep)
    undo = step.model_copy(update={"action": "rollback"})
    said = plain(describe_step(undo, AS_WRITTEN))
    assert said.startswith("Switch current back from release v2")
    out = render_markdown(result.plan)
    flat = out.replace("`", "")
    assert said in flat
    assert "and switch current" not in said
