"""Every example plan passes `tminus check`, and each seed plan keeps its seed's structure."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from tminus.cli.app import cli
from tminus.plan.checks import CheckBase, CheckUse
from tminus.plan.loader import load_plan
from tminus.plan.model import Phase, Plan
from tminus.plan.steps import (
    BackupStep,
    BlueGreenStep,
    CanaryStep,
    FlagStep,
    MaintenanceStep,
    MigrateStep,
    RestoreStep,
    StepBase,
    TrafficStep,
    VerifyBackupStep,
)
from tminus.plan.walk import iter_steps, resolve_check

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SEEDS = EXAMPLES / "seeds"
ALL_PLANS = sorted(EXAMPLES.rglob("*.yaml"))
SEED_PLANS = [
    "archive-import",
    "media-repository",
    "proofile-web",
    "svetu-unified-attributes",
]


def test_examples_found() -> None:
    names = {p.stem for p in ALL_PLANS}
    assert set(SEED_PLANS) <= names
    assert "plan" in names  # the quickstart


@pytest.mark.parametrize("path", ALL_PLANS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_passes_check(path: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert ": ok" in result.output


def _load(name: str) -> Plan:
    result = load_plan(str(SEEDS / f"{name}.yaml"))
    errors = [p for p in result.problems if p.severity == "error"]
    assert result.plan is not None and not errors, errors
    return result.plan


@pytest.fixture(scope="module")
def archive() -> Plan:
    return _load("archive-import")


@pytest.fixture(scope="module")
def media() -> Plan:
    return _load("media-repository")


@pytest.fixture(scope="module")
def proofile() -> Plan:
    return _load("proofile-web")


@pytest.fixture(scope="module")
def svetu() -> Plan:
    return _load("svetu-unified-attributes")


def _steps(plan: Plan) -> list[StepBase]:
    return [site.step for site in iter_steps(plan)]


def _phase_steps(phase: Phase) -> Iterator[StepBase]:
    for step in phase.steps:
        yield step
        if isinstance(step, BlueGreenStep):
            yield from step.deploy


def _check(plan: Plan, name: str) -> CheckBase:
    resolved = resolve_check(plan, CheckUse(use=name))
    assert resolved is not None, name
    return resolved


# --- seeds 000 + 001: archive-import ------------------------------------------------------------


def test_archive_phases(archive: Plan) -> None:
    assert len(archive.phases) == 5
    estimates = [p.estimate for p in archive.phases]
    assert estimates[:4] == [timedelta(minutes=m) for m in (5, 10, 15, 5)]
    assert archive.phases[-1].after == timedelta(days=30)
    assert archive.phases[-1].on_failure == "pause"  # "Rollback: N/A"
    for phase in archive.phases:
        assert phase.script and phase.script.startswith("deployment/phase")
        assert phase.description and phase.risk


def test_archive_downtime_phase_uses_maintenance(archive: Plan) -> None:
    down = [p for p in archive.phases if p.downtime]
    assert [p.name for p in down] == ["Phase 1: Database"]
    kinds = [type(s) for s in down[0].steps]
    actions = [s.action for s in down[0].steps if isinstance(s, MaintenanceStep)]
    assert actions == ["on", "off"]
    # backup before maintenance, migration restoring that backup on rollback
    assert kinds.index(BackupStep) < kinds.index(MaintenanceStep) < kinds.index(MigrateStep)
    migrate = next(s for s in down[0].steps if isinstance(s, MigrateStep))
    assert migrate.on_rollback == "restore" and migrate.backup == "db_backup"
    assert archive.window.max_downtime == timedelta(minutes=5)


def test_archive_nine_tables(archive: Plan) -> None:
    assert len(archive.targets.databases["magento"].tables) == 9
    assert archive.targets.databases["magento"].kind == "mysql"
    tables = _check(archive, "tables_present")
    assert tables.expect is not None and str(tables.expect) == "== 9"
    assert tables.expect.operand == 9


def test_archive_no_data_loss_and_phase_rollbacks(archive: Plan) -> None:
    sources = {c.source for c in archive.checks.values() if isinstance(c, CheckBase)}
    assert {"no_data_loss", "file_count", "sql", "http"} <= sources
    data_phase = archive.phases[2]
    assert any(isinstance(s, RestoreStep) for s in data_phase.rollback)
    assert any(s.undo for s in archive.phases[1].steps)  # git revert, clear caches
    assert any(s.undo for s in archive.phases[3].steps)  # disable module


def test_archive_success_metrics(archive: Plan) -> None:
    targets = {m.name: m.target for m in archive.success_metrics}
    assert targets["Import success rate"] == ">95%"
    assert targets["Match rate"] == ">97%"
    assert targets["Dashboard load time"] == "<100ms"
    assert targets["Error rate"] == "<1%"
    assert str(_check(archive, "import_success_rate").expect) == "> 95%"
    assert str(_check(archive, "match_rate").expect) == "> 97%"
    assert str(_check(archive, "dashboard_load_time").expect) == "< 100ms"


def test_archive_seven_day_watch(archive: Plan) -> None:
    assert archive.watch is not None
    periods = archive.watch.schedule
    first_week = [p for p in periods if (p.start or timedelta()) < timedelta(days=7)]
    ends = {(p.start or timedelta()) + p.for_ for p in first_week}
    assert max(ends) == timedelta(days=7)
    day1 = [p for p in periods if p.start == timedelta() and p.for_ == timedelta(days=1)]
    assert timedelta(minutes=30) in {p.every for p in day1}  # error logs every 30 minutes
    labels = " ".join(p.label or "" for p in periods)
    for day in range(1, 8):
        assert f"Day {day}" in labels
    for focus in ("memory leak", "cron job", "disk space", "full system health"):
        assert focus in labels.lower()


def test_archive_runbook(archive: Plan) -> None:
    assert len(archive.troubleshooting) == 8
    for t in archive.troubleshooting:
        assert t.symptom and t.cause and t.fix
    emergency = {k for k, op in archive.operations.items() if op.emergency}
    assert emergency == {"emergency_stop", "emergency_rollback", "emergency_scale_down"}
    assert archive.operations["emergency_rollback"].estimate == timedelta(minutes=10)
    assert {mw.name for mw in archive.maintenance_windows} == {"Daily", "Weekly", "Monthly"}
    assert archive.health
    assert set(archive.approvals.required) == {"technical_lead", "product_owner", "operations"}
    for role in ("deployment_lead", "database_admin", "developer", "qa", "support"):
        assert archive.roles[role].responsibilities


def test_archive_communication(archive: Plan) -> None:
    befores = {r.before for r in archive.notifications.rules if r.when == "before_window"}
    assert {timedelta(hours=24), timedelta(hours=1)} <= befores
    whens = {r.when for r in archive.notifications.rules}
    assert {"phase_end", "success", "after_success"} <= whens


# --- seed 002: media-repository -----------------------------------------------------------------


def test_media_window(media: Plan) -> None:
    assert media.window.duration == timedelta(hours=7)
    assert media.window.timezone == "America/New_York"
    assert media.total_estimate() == timedelta(hours=7)
    assert [p.estimate for p in media.phases] == [timedelta(hours=h) for h in (1, 2, 1, 1, 2)]


def test_media_notifications(media: Plan) -> None:
    rules = media.notifications.rules
    befores = sorted(r.before for r in rules if r.when == "before_window" and r.before)
    assert befores == [timedelta(hours=1), timedelta(hours=24), timedelta(hours=48)]
    during = [r for r in rules if r.when == "during"]
    assert [r.every for r in during] == [timedelta(minutes=30)]
    assert any(r.when == "after_success" and r.after == timedelta(hours=1) for r in rules)


def test_media_backup_and_tested_rollback(media: Plan) -> None:
    steps = _steps(media)
    assert any(isinstance(s, BackupStep) for s in media.phases[0].steps)
    assert any(isinstance(s, VerifyBackupStep) for s in media.phases[0].steps)
    migration = media.phases[1]
    assert migration.downtime
    migrations = [s for s in migration.steps if isinstance(s, MigrateStep)]
    assert [m.to for m in migrations] == [1, 0, 1]  # migrate, test rollback, re-run
    assert migrations[0].on_rollback == "restore"
    assert any(isinstance(s, VerifyBackupStep) for s in migration.steps)
    assert any(isinstance(s, RestoreStep) for s in steps)
    assert migration.verify


def test_media_stop_deploy_start_and_rollback(media: Plan) -> None:
    backend = media.phases[2]
    names = [s.title().lower() for s in backend.steps]
    stop = next(i for i, n in enumerate(names) if "stop" in n)
    start = next(i for i, n in enumerate(names) if n.startswith("start"))
    deploy = next(i for i, s in enumerate(backend.steps) if s.kind == "release")
    assert stop < deploy < start
    rollback = media.phases[-1].rollback
    assert len(rollback) >= 5
    assert any(isinstance(s, RestoreStep) for s in rollback)
    assert len(media.rollback_triggers) == 5


def test_media_risks_and_roles(media: Plan) -> None:
    assert len(media.risks) == 4
    for risk in media.risks:
        assert risk.mitigation and risk.contingency
    by_name = {r.name: r for r in media.risks}
    assert (by_name["Data loss"].likelihood, by_name["Data loss"].impact) == ("low", "high")
    assert (by_name["Downtime"].likelihood, by_name["Downtime"].impact) == ("medium", "high")
    assert len(media.roles) == 7
    assert all(r.responsibilities for r in media.roles.values())
    assert media.targets.databases["media"].kind == "postgres"
    assert len(media.success_metrics) == 8


# --- seed 003: proofile-web ---------------------------------------------------------------------


def test_proofile_canary_stages(proofile: Plan) -> None:
    canaries = [s for s in _steps(proofile) if isinstance(s, CanaryStep)]
    weights = [w.weight for c in canaries for w in c.steps]
    assert weights == [5, 25, 100]
    assert [c.promote for c in canaries] == [False, False, True]
    assert {c.router for c in canaries} == {"web"}
    assert proofile.targets.routers["web"].kind == "nginx"
    # phase 0 is the data phase (backup, migration); each canary stage has its own criteria
    assert proofile.phases[0].name.startswith("Day 1: Backup")
    for phase in proofile.phases[1:4]:
        assert phase.verify
    stage1 = [c for c in proofile.phases[1].verify if isinstance(c, CheckUse)]
    assert any(c.use == "error_rate" and str(c.expect) == "< 0.5%" for c in stage1)
    assert any(isinstance(s, TrafficStep) for s in proofile.phases[2].rollback)  # back to 5%


@pytest.mark.parametrize(
    ("name", "warn", "critical"),
    [
        ("error_rate", "> 0.5%", "> 1%"),
        ("latency_p95", "> 1s", "> 3s"),
        ("cpu_usage", "> 70%", "> 85%"),
        ("memory_growth", "> 2%", None),
        ("memory_usage", None, "> 90%"),
    ],
)
def test_proofile_alert_thresholds(
    proofile: Plan, name: str, warn: str | None, critical: str | None
) -> None:
    check = _check(proofile, name)
    assert (str(check.warn) if check.warn else None) == warn
    assert (str(check.critical) if check.critical else None) == critical


def test_proofile_monitoring_cadence(proofile: Plan) -> None:
    assert proofile.watch is not None
    cadence = [(p.every, p.start, p.for_) for p in proofile.watch.schedule[:3]]
    h = timedelta(hours=1)
    assert cadence == [
        (timedelta(minutes=1), timedelta(), h),
        (timedelta(minutes=5), h, 7 * h),
        (timedelta(minutes=15), 8 * h, 16 * h),
    ]


def test_proofile_go_no_go_and_alembic(proofile: Plan) -> None:
    assert proofile.approvals.required == ["release_manager"]
    approvals = [s for s in _steps(proofile) if s.kind == "approve"]  # type: ignore[attr-defined]
    assert len(approvals) >= 3
    migrate = next(s for s in _steps(proofile) if isinstance(s, MigrateStep))
    assert migrate.tool == "alembic" and migrate.on_rollback == "down"
    assert (SEEDS / "proofile-web" / "alembic.ini").is_file()
    assert list((SEEDS / "proofile-web" / "alembic" / "versions").glob("*.py"))
    sections = {item.section for item in proofile.checklist}
    assert sections == {
        "Staging Validation",
        "Production Environment Readiness",
        "Team Readiness",
        "Legal & Compliance",
    }
    assert len(proofile.checklist) == 29
    assert {"database_url", "secret_key"} <= set(proofile.secrets)
    delayed = [p.after for p in proofile.phases if p.after]
    assert delayed == [timedelta(days=1), timedelta(days=6), timedelta(weeks=3)]


# --- seed 004: svetu-unified-attributes ---------------------------------------------------------


def test_svetu_blue_green_pools(svetu: Plan) -> None:
    router = svetu.targets.routers["lb"]
    assert router.kind == "nginx"
    # the seed's map routes only canary=1 to green
    assert router.cookie is not None and not isinstance(router.cookie, str)
    assert (router.cookie.name, router.cookie.value) == ("canary", "1")
    pools = router.pools
    assert set(pools) == {"blue", "green"}
    assert all(len(servers) == 3 for servers in pools.values())
    assert len(svetu.targets.groups["blue"].hosts) == 3
    assert len(svetu.targets.groups["green"].hosts) == 3
    ports = {h.port for h in svetu.targets.hosts.values()}
    assert set(range(2201, 2207)) <= ports
    assert all(h.address == "127.0.0.1" for h in svetu.targets.hosts.values())
    bg = [s for s in _steps(svetu) if isinstance(s, BlueGreenStep)]
    assert len(bg) == 1 and (bg[0].active, bg[0].idle) == ("blue", "green")
    assert bg[0].preview and bg[0].deploy


def test_svetu_flag_rollout(svetu: Plan) -> None:
    store = svetu.targets.flag_stores["flags"]
    assert store.kind == "flagd" and store.path.endswith(".json")
    percentages = [
        s.percentage
        for s in _steps(svetu)
        if isinstance(s, FlagStep) and s.flag == "unified_attributes" and s.percentage
    ]
    assert percentages[:4] == [10, 25, 50, 100]
    dual = [s.enabled for s in _steps(svetu) if isinstance(s, FlagStep) and s.flag == "dual_write"]
    assert True in dual and False in dual  # enabled, then disabled at finalization


def test_svetu_migrations(svetu: Plan) -> None:
    ups = [
        s.to for s in svetu.phases[1].steps if isinstance(s, MigrateStep) and s.database == "svetu"
    ]
    assert ups == [34, 35]
    migrations = SEEDS / "svetu-unified-attributes" / "migrations"
    for stem in ("000034_unified_attributes", "000035_migrate_attributes_data"):
        assert (migrations / f"{stem}.up.sql").is_file()
        assert (migrations / f"{stem}.down.sql").is_file()


def test_svetu_rollbacks(svetu: Plan) -> None:
    estimates = {k: op.estimate for k, op in svetu.operations.items()}
    assert estimates["instant_rollback"] == timedelta(minutes=1)
    assert estimates["feature_flag_rollback"] == timedelta(seconds=30)
    assert estimates["database_rollback"] == timedelta(minutes=5)
    db = svetu.operations["database_rollback"]
    restores = [s for s in db.steps if isinstance(s, RestoreStep)]
    # phase 2's pre-migration backup (the seed's backup_before_migration.dump)
    assert [(r.from_.model_dump(), r.database) for r in restores] == [
        ({"deploy": "latest", "backup": "before_migration"}, "svetu")
    ]
    assert db.on_failure == "pause"  # a rollback of it would switch the flag back on


@pytest.mark.parametrize(
    ("name", "warn", "critical"),
    [
        ("error_rate", "> 0.5%", "> 1%"),
        ("latency_p95", "> 75ms", "> 100ms"),
        ("replication_lag", None, "> 1s"),
        ("memory_usage", None, "> 90%"),
        ("cpu_usage", "> 80%", None),
        ("disk_usage", "> 85%", None),
    ],
)
def test_svetu_alert_thresholds(
    svetu: Plan, name: str, warn: str | None, critical: str | None
) -> None:
    check = _check(svetu, name)
    assert (str(check.warn) if check.warn else None) == warn
    assert (str(check.critical) if check.critical else None) == critical


def test_svetu_phases_risks_and_communication(svetu: Plan) -> None:
    names = " ".join(p.name for p in svetu.phases)
    for n in range(1, 7):
        assert f"Phase {n}:" in names
    assert all(not p.downtime for p in svetu.phases)
    assert svetu.window.max_downtime == timedelta(0)
    assert len(svetu.risks) == 3
    assert all(r.impact == "high" and r.rollback for r in svetu.risks)
    channels = svetu.notifications.channels
    assert {"slack", "tech_email", "status_page", "user_email", "support"} <= set(channels)
    assert set(svetu.roles) == {"devops_team", "backend_team", "qa_team", "product_team"}
    assert svetu.phases[-1].after == timedelta(days=30)
