"""Seed 004 svetu-unified-attributes: the seed's emergency procedures "Database Rollback
(< 5 minutes)" and "Feature Flag Rollback (< 30 seconds)" as the plan's operations
(`tminus op run`), each putting back what an earlier deploy changed.

- `database_rollback` restores the backup phase 2 took right before migration 000034
  (`from: {deploy: latest, backup: before_migration}`), after phase 2 ran through the CLI
  exactly as test_seed_rehearsals.py's svetu tests run it (its helpers are reused), on a real
  PostgreSQL database; then every table, row, column, index, constraint, sequence and the
  golang-migrate version are compared with the state before the migration.
- `feature_flag_rollback` switches `unified_attributes` back off at 0% after a deploy of
  phase 5's rollout turned it on for 100% of users, in the flagd file of the rehearsal
  directory; the file is compared with its state before that deploy.

Each test's docstring names its stand-ins and reductions; examples/seeds/README.md (004, "What
the rehearsals leave out") lists them too.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import Tm
from tests.examples.test_seed_rehearsals import (
    SEEDS,
    SVETU_PHASE,
    SVETU_ROLES,
    pg_content,
    pg_exec,
    pg_one,
    rehearse,
    seed_svetu,
    steps,
)
from tminus.flags.flagd import parse_flag
from tminus.plan.loader import parse_yaml

PLAN = SEEDS / "svetu-unified-attributes.yaml"
REHEARSAL = Path(".tminus") / "rehearsal" / "svetu-unified-attributes"
ROLLOUT_PHASE = "Phase 5: Green Environment Deployment (Day 15)"
DATABASE_ROLLBACK_BOUND_S = 5 * 60  # the seed: "Database Rollback (< 5 minutes)"
FLAG_ROLLBACK_BOUND_S = 30  # the seed: "Feature Flag Rollback (< 30 seconds)"


def seed_plan() -> dict[str, Any]:
    data, _, problems = parse_yaml(PLAN.read_text(), PLAN.name)
    assert not problems
    plan: dict[str, Any] = data
    return plan


def write_plan(tm: Tm, name: str, data: dict[str, Any]) -> Path:
    path = tm.cwd / name
    path.write_text(json.dumps(data, indent=1))
    return path


def install_flags(tm: Tm) -> Path:
    """Phase 1's "Install the initial feature flag configuration": the plan's flags.json
    copied into the rehearsal directory (where the plan's flag store `flags` is)."""
    rehearsal = tm.cwd / REHEARSAL
    rehearsal.mkdir(parents=True, exist_ok=True)
    shutil.copy(SEEDS / "svetu-unified-attributes" / "flags" / "flags.json", rehearsal)
    return rehearsal / "flags.json"


def flags(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())["flags"]
    return doc


def pg_schema(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Columns (type, nullability, default), indexes, constraints and sequences (with their
    last value) of every user schema."""
    user = "NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
    queries = {
        "columns": "SELECT table_schema, table_name, ordinal_position, column_name, data_type, "
        "is_nullable, column_default, character_maximum_length, numeric_precision, "
        f"numeric_scale FROM information_schema.columns WHERE table_schema {user} "
        "ORDER BY 1, 2, 3",
        "indexes": "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
        f"WHERE schemaname {user} ORDER BY 1, 2, 3",
        "constraints": "SELECT n.nspname, c.conrelid::regclass::text, c.conname, "
        "pg_get_constraintdef(c.oid) FROM pg_constraint c "
        f"JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname {user} "
        "ORDER BY 1, 2, 3",
        "sequences": "SELECT schemaname, sequencename, last_value FROM pg_sequences "
        f"WHERE schemaname {user} ORDER BY 1, 2",
    }
    with psycopg.connect(url, autocommit=True) as conn:
        return {k: [tuple(r) for r in conn.execute(q.encode())] for k, q in queries.items()}


def migrate_and_write(tm: Tm, pg_url: str) -> str:
    """Phase 2 through the CLI (as test_seed_rehearsals.py runs it), then writes made after
    the migration (a new listing, a changed legacy value, its unified copy): the id of the
    phase 2 deploy."""
    tm.env["DATABASE_URL"] = pg_url
    done = rehearse(tm, PLAN.name, SVETU_PHASE, SVETU_ROLES)
    assert done.returncode == 0, done.stdout + done.stderr
    phase2 = str(tm.latest()["id"])
    assert pg_one(pg_url, "SELECT version, dirty FROM schema_migrations") == (35, False)
    assert pg_one(pg_url, "SELECT count(*) FROM unified_attribute_values") > 0
    pg_exec(
        pg_url,
        "INSERT INTO listings (title, category_id, price, created_at, updated_at) "
        "VALUES ('Oglas posle migracije', 2, 99.50, now(), now());"
        "UPDATE listing_attribute_values SET text_value = 'changed' WHERE listing_id = 7;"
        "UPDATE unified_attribute_values SET text_value = 'changed' WHERE entity_id = 7",
    )
    return phase2


def rollback_plan(failed_restart: bool = False) -> dict[str, Any]:
    """The seed's plan with `database_rollback` as this machine can run it: without the
    `error_rate` check (no Prometheus here) and without the `ssh` "Restart applications"
    step (the seed's six servers do not exist here); with ``failed_restart``, a `run` step
    `false` named "Restart applications (rehearsal: fails)" takes its place."""
    data = seed_plan()
    op = data["operations"]["database_rollback"]
    kinds = [s["kind"] for s in op["steps"]]
    assert kinds == ["flag", "restore", "ssh"], kinds
    assert op["steps"][1]["from"] == {"deploy": "latest", "backup": "before_migration"}
    assert op["on_failure"] == "pause"
    op["steps"] = op["steps"][:2]
    if failed_restart:
        restart = {"kind": "run", "name": "Restart applications (rehearsal: fails)"}
        op["steps"].append({**restart, "command": "false"})
    assert op["checks"][-1] == "error_rate"
    op["checks"] = op["checks"][:-1]
    return data


def test_svetu_database_rollback_restores_the_pre_migration_backup(tm: Tm, pg_url: str) -> None:
    """Phase 2 (backup `before_migration`, test restore, migrations 000034 and 000035), writes
    after it, then `tminus op run … database_rollback --yes`: unified attributes off, the
    pre-migration backup of the phase 2 deploy restored, checks `migration_rolled_back`,
    `unified_tables_gone`, `legacy_integrity`. Afterwards every table's rows and columns, the
    schema (columns with types and defaults, indexes, constraints, sequences with their last
    values) are exactly as before the migration, `schema_migrations` absent again; the rows
    written after the migration are gone (the operation's confirmation says so). Wall time of
    the whole `tminus op run` process is printed and held to the seed's bound, 5 minutes.

    Stand-ins: the legacy tables and rows are test_seed_rehearsals.py's (`seed_svetu`: 300
    listings, 12 attributes); like the plan's migrations directory (000034 and 000035 only)
    they start with no golang-migrate table. The writes after the migration are three SQL
    statements by the test, not the application's dual-write. The flag file is the plan's
    `flags/flags.json` copied into the rehearsal directory (phase 1's install step, which is
    not run).

    Reductions: phase 2 as in test_svetu_up_down_migration_phase (`--phase`,
    `--skip-checklist`, scratch `DATABASE_URL`, approvals by the test). The operation runs from
    a rewritten copy of the plan (`rollback_plan`): its `ssh` "Restart applications" step is
    removed (six servers this machine does not have) and the `error_rate` check is removed (no
    Prometheus); everything else, the restore's `from:` included, is the seed plan's.

    Left out: the applications are not restarted and nothing measures their error rate; the
    read replica is not involved (phase 2b is not run); the timing is of a 300-listing
    database, not of production's size.

    Mutations tried (each made this test fail): the restore step removed from the operation
    (the checks fail: version 35, unified tables present; the operation pauses); `from:`
    pointing at `full_backup` (phase 1's, never recorded here: `tminus op run` exits 2 before
    any step)."""
    counts = seed_svetu(pg_url)
    before_rows, before_schema = pg_content(pg_url), pg_schema(pg_url)
    phase2 = migrate_and_write(tm, pg_url)
    assert pg_content(pg_url) != before_rows
    assert pg_schema(pg_url) != before_schema
    flag_file = install_flags(tm)

    plan = write_plan(tm, "svetu-database-rollback.yaml", rollback_plan())
    started = time.monotonic()
    done = tm(
        "op", "run", str(plan), "database_rollback", "--yes", timeout=DATABASE_ROLLBACK_BOUND_S
    )
    elapsed = time.monotonic() - started
    listings = counts["public.listings"]
    print(f"\ndatabase_rollback (tminus op run, {listings} listings): {elapsed:.2f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert elapsed < DATABASE_ROLLBACK_BOUND_S

    op = tm.latest()
    assert op["id"].startswith("svetu-unified-attributes.op.database_rollback-"), op
    assert op["state"] == "succeeded", op
    rows = steps(tm)
    restore = next(r for r in rows.values() if r["title"].startswith("Restore the pre-migration"))
    assert restore["state"] == "succeeded", restore
    assert restore["artifacts"]["from_deploy"] == phase2
    assert restore["artifacts"]["from_step"] == "before_migration"
    checks = {r["title"]: r for k, r in rows.items() if "/verify/" in k}
    assert len(checks) == 3, checks
    assert all(r["state"] == "succeeded" for r in checks.values()), checks

    # no golang-migrate table, as before 000034 (the plan's migrations are 000034 and 000035)
    assert pg_one(pg_url, "SELECT to_regclass('schema_migrations') IS NULL") is True
    assert pg_schema(pg_url) == before_schema
    assert pg_content(pg_url) == before_rows
    assert (
        pg_one(pg_url, "SELECT count(*) FROM listings WHERE title = 'Oglas posle migracije'") == 0
    )
    unified = parse_flag("unified_attributes", flags(flag_file)["unified_attributes"])
    assert (unified.enabled, unified.percentage) == (False, 0)


def test_svetu_database_rollback_pauses_when_the_restart_fails(tm: Tm, pg_url: str) -> None:
    """The same rollback when "Restart applications" fails after the restore: the operation
    has `on_failure: pause`, so it stops with
    nothing undone — the database stays restored and unified attributes stay off (a rollback
    of the operation would switch the flag back on over a database without unified tables).

    Stand-ins and reductions: as test_svetu_database_rollback_restores_the_pre_migration_backup
    (the `ssh` restart and the `error_rate` check removed), and the failing restart is a `run`
    step `false` added by the test. The flag file is set by the test to phase 5's end state
    (on, 100%) instead of running the rollout.

    Mutations tried: `on_failure: pause` removed from the operation (the operation rolls back,
    the flag's built-in undo puts unified_attributes back on at 100%: this test fails)."""
    seed_svetu(pg_url)
    before_rows = pg_content(pg_url)
    migrate_and_write(tm, pg_url)
    flag_file = install_flags(tm)
    doc = json.loads(flag_file.read_text())  # as phase 5's rollout leaves it: on for everyone
    doc["flags"]["unified_attributes"].update(
        state="ENABLED",
        targeting={"fractional": [{"var": "user_id"}, ["on", 100], ["off", 0]]},
    )
    flag_file.write_text(json.dumps(doc))

    plan = write_plan(tm, "svetu-database-rollback.yaml", rollback_plan(failed_restart=True))
    done = tm(
        "op", "run", str(plan), "database_rollback", "--yes", timeout=DATABASE_ROLLBACK_BOUND_S
    )
    assert done.returncode != 0, done.stdout + done.stderr
    op = tm.latest()
    assert op["state"] == "paused", (op, done.stdout, done.stderr)
    rows = steps(tm)
    states = {r["title"]: r["state"] for r in rows.values()}
    assert states["Restart applications (rehearsal: fails)"] == "failed", states
    assert states["Restore the pre-migration backup (pg_restore backup_before_migration)"] == (
        "succeeded"
    ), states
    assert not any(k.startswith("rollback/") for k in rows), rows
    assert pg_content(pg_url) == before_rows
    unified = parse_flag("unified_attributes", flags(flag_file)["unified_attributes"])
    assert (unified.enabled, unified.percentage) == (False, 0)


def rollout_plan() -> dict[str, Any]:
    """The seed's phase 5 reduced to its flag rollout: the four `flag` steps (10%, 25%, 50%,
    100%) as written; its go/no-go, blue_green switch, waits and verify removed."""
    data = seed_plan()
    phase = next(p for p in data["phases"] if p["name"] == ROLLOUT_PHASE)
    phase["steps"] = [s for s in phase["steps"] if s["kind"] == "flag"]
    assert [s.get("percentage") for s in phase["steps"]] == [10, 25, 50, 100]
    phase.pop("verify")
    return data


def test_svetu_feature_flag_rollback_after_the_rollout(tm: Tm) -> None:
    """A deploy of phase 5's flag rollout turns `unified_attributes` on for 10%, 25%, 50%, then
    100% of users in the rehearsal directory's flagd file; `tminus op run …
    feature_flag_rollback` (the seed plan as written) puts the flag back exactly as it was
    before that deploy (off, 0%: the state phase 1 installs, the seed's
    `unified_attributes_enabled: false`), leaves the other flags alone, within the seed's
    30 seconds (wall time of the `tminus op run` process, printed).

    Stand-ins: the flag file is the plan's `flags/flags.json` copied into the rehearsal
    directory (phase 1's install step); nothing reads the flags (no application).

    Reductions: the rollout runs from a rewritten copy of the plan (`rollout_plan`): phase 5
    keeps only its four `flag` steps; its go/no-go, blue_green switch, four waits (65 minutes)
    and verify are removed; `--phase`, `--skip-checklist`, approvals by the test.

    Mutations tried: `percentage: 0` removed from the operation's flag step (the flag ends off
    but at 100%, unlike before the deploy: this test fails); `enabled: false` changed to
    `true` (fails)."""
    flag_file = install_flags(tm)
    before = flags(flag_file)
    plan = write_plan(tm, "svetu-rollout.yaml", rollout_plan())
    done = rehearse(tm, str(plan), ROLLOUT_PHASE, SVETU_ROLES)
    assert done.returncode == 0, done.stdout + done.stderr
    rolled_out = flags(flag_file)
    on = parse_flag("unified_attributes", rolled_out["unified_attributes"])
    assert (on.enabled, on.percentage) == (True, 100)

    started = time.monotonic()
    done = tm("op", "run", str(PLAN), "feature_flag_rollback", timeout=FLAG_ROLLBACK_BOUND_S)
    elapsed = time.monotonic() - started
    print(f"\nfeature_flag_rollback (tminus op run): {elapsed:.2f} s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert elapsed < FLAG_ROLLBACK_BOUND_S
    assert tm.latest()["id"].startswith("svetu-unified-attributes.op.feature_flag_rollback-")
    after = flags(flag_file)
    off = parse_flag("unified_attributes", after["unified_attributes"])
    assert (off.enabled, off.percentage) == (False, 0)
    assert after == before
