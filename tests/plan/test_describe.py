"""One description per step kind (issue #14 item 6): :func:`tminus.plan.describe.describe_step`
says what a step does for the runbook (``AS_WRITTEN``) and for the dry run and the console
(``tminus.steps.base.AsRun``, through ``StepKindBase.describe``).

Asserted: every built-in kind (``BUILTIN_STEP_MODELS``) has its own description, shown both
ways; the runbook and the dry run of one plan say the same words for a step, values as written
(``${name}``) in one and resolved in the other, the command whole in the dry run; what either
of the two former texts said survives the merge (backup's jobs, restore's checksums, the
canary's ramp and analysis count, …); a secret's value never appears, masked ``***``; the
undo ``steps.migrate`` makes of a migration is described as going back down; ``tminus check``
does not import ``plan.describe``.

Mutations tried (each fails the tests named, and only tests of this file were run):
``RestoreStep`` removed from ``DESCRIBERS`` → ``test_every_builtin_kind_has_its_own_description
[restore]`` (the bare-kind fallback), ``test_every_step_of_the_examples_is_described_both_ways``
and ``test_the_merge_keeps_what_either_text_said``; ``AsRun.value`` returning the text as
written → ``test_runbook_and_dry_run_say_the_same_words`` (the dry run shows ``${name}``), the
merge and the secret tests; ``_run`` showing ``command_text(s.command)`` instead of
``show.command(s.command)`` → the same-words, secret, merge and shortening tests;
``StepKindBase.describe`` without ``resolver.mask`` → ``test_a_secret_never_appears``;
``AsWritten.command`` without ``one_line`` → ``test_as_written_shortens_and_as_run_shows_whole``;
``(checksums first, then compare)`` dropped from ``_restore``, or ``, then hold the last
weight`` from ``_canary`` → ``test_the_merge_keeps_what_either_text_said``;
``_migrate`` looking for ``"down:"`` instead of ``MIGRATE_BEFORE_PREFIX`` (the marker
``steps.migrate`` writes) → ``test_the_undo_of_a_migrate_step_says_it_goes_back_down``;
the modules of ``tminus render`` instead of ``check`` in
``test_check_does_not_import_the_descriptions`` → it fails (render does import them).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import Tm
from tminus.plan.describe import (
    AS_WRITTEN,
    DESCRIBERS,
    describe_step,
    plain,
)
from tminus.plan.interpolate import Resolver
from tminus.plan.loader import load_plan
from tminus.plan.render import render_markdown
from tminus.plan.steps import BUILTIN_STEP_MODELS, StepBase
from tminus.steps.base import AsRun, StepKindBase

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: One step of each built-in kind, with the fields whose words the merge must keep.
SAMPLES: dict[str, dict[str, Any]] = {
    "kubernetes": {
        "target": "k8s",
        "deployment": "api",
        "action": "set_env",
        "container": "api",
        "env": {"GREETING": "hello ${name}"},
    },
    "run": {"command": "echo ${name}", "cwd": "${dir}"},
    "ssh": {
        "on": "web",
        "command": "systemctl restart app",
        "batch": [1, "25%"],
        "max_fail": 1,
        "max_fail_per_batch": "50%",
        "become": True,
    },
    "http": {"url": "https://${host_name}/health", "expect": {"status": 200}},
    "sql": {"database": "app", "statements": ["UPDATE t SET a = 1", "SELECT 1"]},
    "wait": {"duration": "${hold}"},
    "approve": {"roles": ["ops"], "message": "Go?"},
    "maintenance": {"action": "on", "flag_file": "/srv/${name}/MAINT"},
    "notify": {"message": "done", "severity": "critical", "channels": ["ops"]},
    "backup": {"database": "app", "jobs": 4},
    "restore": {"from": "pre", "database": "app"},
    "verify_backup": {"from": "pre"},
    "migrate": {"database": "app", "tool": "command", "up": "./up", "down": "./down"},
    "snapshot": {"databases": ["app"]},
    "upload": {"on": "web", "src": "dist/", "dest": "/srv/app/", "mode": "0640", "batch": 2},
    "release": {"on": "web", "path": "/srv/app", "source": "build", "keep": 3},
    "traffic": {"router": "lb", "weights": {"blue": 90, "green": 10}},
    "flag": {"store": "flags", "flag": "new_ui", "percentage": 25, "enabled": True},
    "canary": {
        "router": "lb",
        "stable": "blue",
        "canary": "green",
        "steps": [{"weight": 5, "pause": "${hold}"}, {"weight": 50, "pause": "manual"}],
        "analysis": ["error_rate", "latency"],
        "promote": False,
    },
    "blue_green": {
        "router": "lb",
        "active": "blue",
        "idle": "green",
        "deploy": [{"kind": "run", "command": "true"}],
        "preview": ["green_ok"],
        "rollback_window": "1h",
    },
}

VALUES = {"name": "world", "dir": "/tmp", "hold": "90s", "host_name": "example.org"}


def _step(kind: str, **extra: Any) -> StepBase:
    return BUILTIN_STEP_MODELS[kind].model_validate({"kind": kind, **SAMPLES[kind], **extra})


def _as_run(step: StepBase, **secrets: str) -> str:
    return StepKindBase().describe(step, Resolver.for_plan(VALUES, secrets, env={}))


@pytest.mark.parametrize("kind", sorted(BUILTIN_STEP_MODELS))
def test_every_builtin_kind_has_its_own_description(kind: str) -> None:
    assert set(SAMPLES) == set(BUILTIN_STEP_MODELS)  # a new kind needs a sample here
    assert BUILTIN_STEP_MODELS[kind] in DESCRIBERS
    step = _step(kind)
    for shown in (plain(describe_step(step, AS_WRITTEN)), _as_run(step)):
        assert shown and not shown.startswith(f"{kind} step"), shown  # not the fallback


def test_every_step_of_the_examples_is_described_both_ways() -> None:
    plans = [EXAMPLES / "quickstart" / "plan.yaml", *sorted((EXAMPLES / "seeds").glob("*.yaml"))]
    for path in plans:
        plan = load_plan(path).plan
        assert plan is not None, path
        for phase in plan.phases:
            for step in [*phase.steps, *phase.rollback, *(u for s in phase.steps for u in s.undo)]:
                kind = str(getattr(step, "kind", ""))
                assert not plain(describe_step(step, AS_WRITTEN)).startswith(f"{kind} step")
                assert not _as_run(step).startswith(f"{kind} step")


def test_as_written_shortens_and_as_run_shows_whole() -> None:
    long = "echo " + " ".join(f"word{i}" for i in range(60))
    step = _step("run", command=long, cwd=None)
    runbook = plain(describe_step(step, AS_WRITTEN))
    assert runbook.endswith("…") and len(runbook) < len(long)
    assert _as_run(step) == f"Run {long}"
    sql = _step("sql")
    assert plain(describe_step(sql, AS_WRITTEN)) == "SQL on app: UPDATE t SET a = 1 (+1 more)"
    assert _as_run(sql) == "SQL on app: UPDATE t SET a = 1; SELECT 1"


def test_the_merge_keeps_what_either_text_said() -> None:
    """Each phrase was said by the runbook or by the kind's former describe()."""
    said = {
        "run": ["Run echo world in /tmp"],
        "ssh": ["On web: systemctl restart app", "batches 1 → 25%", "max 1 failures"],
        "http": ["GET https://example.org/health (expect 200)"],
        "wait": ["Wait 1m30s"],
        "approve": ["Approval by ops: Go?"],
        "maintenance": ["Maintenance mode ON (flag file /srv/world/MAINT)"],
        "notify": ['Notify [critical] to ops: "done"'],
        "backup": ["Back up database app", "verified", "jobs 4"],
        "restore": ["Restore app from backup pre (checksums first, then compare)"],
        "verify_backup": ["Verify backup pre by restoring it into a scratch copy", "drop"],
        "migrate": ["Migrate app with ./up; on rollback: migrate down"],
        "snapshot": ["Snapshot tables, indexes and counts of app"],
        "upload": ["Upload dist/ to web:/srv/app/", "mode 0640", "batches of 2"],
        "release": ["Release build to web:/srv/app and switch current", "keep 3"],
        "traffic": ["Router lb: blue 90%, green 10%"],
        "flag": ["Flag new_ui in flags → 25%, on"],
        "canary": [
            "Canary on lb: green at 5% (hold 1m30s) → 50% (manual promotion)",
            "then hold the last weight (stable blue)",
            "analysis: 2 checks (error_rate, latency)",
        ],
        "blue_green": [
            "Blue/green on lb: deploy to idle green (1 step)",
            "preview 1 check (green_ok)",
            "switch from blue",
            "switch-back window 1h",
        ],
    }
    said["ssh"] += ["max 50% failures per batch", "as root"]
    for kind, phrases in said.items():
        shown = _as_run(_step(kind))
        for phrase in phrases:
            assert phrase in shown, (kind, phrase, shown)
    rollback = _step("release", action="rollback", release_id="r7")
    assert _as_run(rollback) == "Switch current back from release r7 on web:/srv/app"
    back = _step("traffic", weights={}, restore="phase/0/step/1")
    assert _as_run(back) == "Router lb: back to the split recorded before phase/0/step/1"
    flag = _step("flag", restore="phase/0/step/2")
    assert _as_run(flag).endswith("back to its state before phase/0/step/2")
    maint = _step("maintenance", flag_file=None, enable="touch ${dir}/m")
    assert _as_run(maint) == "Maintenance mode ON via touch /tmp/m"


def test_the_undo_of_a_migrate_step_says_it_goes_back_down() -> None:
    from tminus.steps.migrate import KIND

    ctx: Any = SimpleNamespace(key="phase/0/step/2")  # all the compensation reads
    down = KIND.compensation(_step("migrate"), ctx)
    assert down is not None
    assert _as_run(down.step) == (
        "Migrate app back down to the version recorded before phase/0/step/2 with ./down"
    )
    alembic = KIND.compensation(_step("migrate", tool="alembic", config="a.ini"), ctx)
    assert alembic is not None
    assert plain(describe_step(alembic.step, AS_WRITTEN)) == (
        "Migrate app back down to the revision recorded before phase/0/step/2 with alembic "
        "downgrade (config a.ini)"
    )


PLAN = """\
name: words
environment: test
variables: {name: world, dir: /tmp}
secrets: {token: "${env:DESCRIBE_TOKEN}"}
phases:
  - name: one
    steps:
      - {kind: run, name: greet, command: "echo hello ${name}", cwd: "${dir}"}
      - {kind: notify, name: tell, message: "deploying ${name}"}
      - {kind: run, name: call, command: "curl -H 'Authorization: Bearer ${token}' https://x"}
"""
TOKEN = "tok-5f3a9c1e77"


def test_runbook_and_dry_run_say_the_same_words(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PLAN)
    plan = load_plan(tmp_path / "p.yaml").plan
    assert plan is not None
    runbook = render_markdown(plan)
    dry = Tm(tmp_path, env={"DESCRIBE_TOKEN": TOKEN})("run", "p.yaml", "--dry-run", check=0)
    greet, tell, _ = plan.phases[0].steps
    for step in (greet, tell):
        written = plain(describe_step(step, AS_WRITTEN))
        assert "${name}" in written, written  # the runbook's words, as written
        resolved = written.replace("${name}", "world").replace("${dir}", "/tmp")
        assert f"{step.title()}: {resolved}\n" in dry.stdout, dry.stdout  # the same, as run
    assert "greet: Run echo hello world in /tmp" in dry.stdout
    assert "Run `echo hello ${name}` in `${dir}`" in runbook
    assert 'Notify to all channels: "deploying ${name}"' in runbook


def test_a_secret_never_appears(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(PLAN)
    dry = Tm(tmp_path, env={"DESCRIBE_TOKEN": TOKEN})("run", "p.yaml", "--dry-run", check=0)
    assert TOKEN not in dry.stdout + dry.stderr
    assert "call: Run curl -H 'Authorization: Bearer ***' https://x" in dry.stdout, dry.stdout
    plan = load_plan(tmp_path / "p.yaml").plan
    assert plan is not None
    assert "Bearer ${token}" in render_markdown(plan) and TOKEN not in render_markdown(plan)
    # the describe of every kind masks: a secret in a value, a command, SQL
    secrets = {"pw": TOKEN}
    for kind, extra in (
        ("run", {"command": "echo ${pw}"}),
        ("notify", {"message": "pw ${pw}"}),
        ("sql", {"statements": ["UPDATE u SET pw = '${pw}'"]}),
        ("ssh", {"command": "echo '${pw}'"}),
        ("maintenance", {"flag_file": None, "enable": 'echo "${pw}"'}),
    ):
        shown = _as_run(_step(kind, **extra), **secrets)
        assert TOKEN not in shown and "***" in shown, (kind, shown)
    assert plain(describe_step(_step("run", command="echo ${pw}"), AsRun(Resolver()))) == (
        "Run echo ${pw} in ${dir}"  # a value that does not resolve is shown as written
    )


def test_check_does_not_import_the_descriptions(tmp_path: Path) -> None:
    """``tminus check`` loads no description: only the runbook and the step kinds do."""
    from tests.test_cli_startup import QUICKSTART, _modules

    mods = _modules(["check", str(QUICKSTART)], tmp_path)
    assert "tminus.plan.loader" in mods
    assert "tminus.plan.describe" not in mods
