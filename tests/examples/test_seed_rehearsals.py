"""Rehearsals of the seed plans' data phases against the real database servers.

Each seed's database phase runs through the real CLI (`tminus run --phase … --skip-checklist`,
the approvals gate signed off, `tminus resume`) on a fresh database filled with realistic data:

- 000/001 archive-import: MySQL; backup, test restore, maintenance mode, the Magento schema
  upgrade (a stand-in bin/magento applying the 2.0.0 migration), verify with no_data_loss;
- 002 media-repository: PostgreSQL; snapshot, backup, the sql_dir migration, its tested
  rollback (down, check, up again), a test restore, verify with no_data_loss;
- 003 proofile-web: PostgreSQL with alembic; git tag, backup, test restore, snapshot,
  `alembic upgrade head`, verify with no_data_loss and the release's revision;
- 004 svetu-unified-attributes: PostgreSQL with up/down SQL migrations 000034/000035.

Every seed also fails once, for a reason its own plan catches (a half-applied MySQL migration, a
legacy row the new schema refuses, an unexpected alembic head, a data migration that silently
skips values), and the test checks that the rollback leaves every table exactly as before.

What every test here shares: the plan's text is run as written (no test rewrites it), but
with `--phase` (one phase only) and `--skip-checklist` (the plan's checklist is never asked),
the database URL pointed at a scratch database through the environment, the legacy schema and
its rows written by the test (or, for 000/001, by `archive-import/rehearsal/
production-before.sql` plus test rows), not a production dump, and every role of
`approvals.required` signed off by the test itself (`--as rehearsal-approver`). Notifications
(the plan's rules and `notify` steps) are only printed and recorded by tminus: no e-mail,
Slack, webhook or status page receives anything. No test runs a plan's `watch:` schedule,
`operations`, `troubleshooting`, `maintenance_windows` or `health`, and no rollback trigger is
made to fire. Each test's docstring names its stand-ins and what it leaves out; so does
examples/seeds/README.md ("What the rehearsals leave out").
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest

from tests.conftest import Tm
from tminus.backups import Manifest

SEEDS = Path(__file__).resolve().parents[2] / "examples" / "seeds"
T0 = datetime(2026, 1, 20, 9, 0, tzinfo=UTC)


# --- driving a selected deploy ----------------------------------------------------------------
def rehearse(
    tm: Tm, plan: str, phase: str, roles: list[str], *extra: str
) -> subprocess.CompletedProcess[str]:
    """Run one phase of a seed with the checklist left out, sign off every required role, then
    resume; the resume's process (its exit code is the deploy's)."""
    first = tm("run", str(SEEDS / plan), "--phase", phase, "--skip-checklist", *extra)
    assert first.returncode == 3, first.stdout + first.stderr
    deploy = tm.latest()
    assert deploy["state"] == "awaiting_approval", deploy
    for role in roles:
        tm("approve", deploy["id"], "--role", role, "--as", "rehearsal-approver", check=0)
    return tm("resume", deploy["id"])


def steps(tm: Tm) -> dict[str, dict[str, Any]]:
    """Step rows of the latest deploy by key: state, error and artifacts."""
    deploy = tm.latest()["id"]
    with sqlite3.connect(tm.cwd / ".tminus" / "state.db") as db:
        rows = db.execute(
            "SELECT key, title, state, error, artifacts FROM steps WHERE deploy_id = ?", (deploy,)
        ).fetchall()
    return {
        k: {"title": t, "state": s, "error": e, "artifacts": json.loads(a) if a else {}}
        for k, t, s, e, a in rows
    }


def by_title(rows: dict[str, dict[str, Any]], start: str) -> dict[str, Any]:
    hits = [r for r in rows.values() if r["title"].startswith(start)]
    assert len(hits) == 1, (start, [r["title"] for r in rows.values()])
    return hits[0]


def manifests(dest: Path) -> list[Manifest]:
    return [Manifest.load(p.parent) for p in sorted(dest.glob("*/manifest.json"))]


def table_rows(m: Manifest) -> dict[str, int]:
    return {t.name: t.rows for t in m.tables}


# --- PostgreSQL -------------------------------------------------------------------------------
def pg_exec(url: str, sql: str, params: list[tuple[Any, ...]] | None = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        if params is None:
            conn.execute(sql.encode())
        else:
            with conn.cursor() as cur:
                cur.executemany(sql.encode(), params)


def pg_one(url: str, sql: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql.encode()).fetchone()
    return None if row is None else row[0] if len(row) == 1 else row


def pg_content(url: str) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every user table: its columns and all its rows (sorted), for an exact comparison."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            (s, t)
            for s, t in conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
            )
        ]
        out = {}
        for s, t in tables:
            cur = conn.execute(f'SELECT * FROM "{s}"."{t}"'.encode())
            cols = [d.name for d in cur.description or []]
            out[f"{s}.{t}"] = (cols, sorted(cur.fetchall(), key=repr))
        return out


# --- MySQL ------------------------------------------------------------------------------------
def my_connect(url: str) -> Any:
    name = url.rsplit("/", 1)[1]
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", database=name, autocommit=True)


def my_content(url: str) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    conn = my_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
            tables = sorted(r[0] for r in cur.fetchall())
            out = {}
            for t in tables:
                cur.execute(f"SELECT * FROM `{t}`")
                cols = [d[0] for d in cur.description]
                out[t] = (cols, sorted(cur.fetchall(), key=repr))
            return out
    finally:
        conn.close()


def my_one(url: str, sql: str) -> Any:
    conn = my_connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


# === 000/001 archive-import: MySQL, Magento schema upgrade ====================================
ARTISTS = [
    ("grateful-dead", "Grateful Dead", "GratefulDead"),
    ("phish", "Phish", "Phish"),
    ("string-cheese-incident", "The String Cheese Incident", "StringCheeseIncident"),
    ("moe", "moe.", "moe"),
    ("umphreys-mcgee", "Umphrey's McGee", "UmphreysMcGee"),
    ("widespread-panic", "Widespread Panic", "WidespreadPanic"),
    ("billy-strings", "Billy Strings", "BillyStrings"),
    ("goose", "Goose", "GooseBand"),
]
VENUES = ["Barton Hall", "Red Rocks", "Fillmore West", "MSG", "The Gorge", "Merriweather"]


def seed_magento(url: str, *, duplicate_show: bool = False) -> dict[str, int]:
    """The production database before the deploy: schema 1.9.0 with shows, import runs,
    unmatched tracks… as the old importer left them. Returns the row count per table."""
    schema = (SEEDS / "archive-import" / "rehearsal" / "production-before.sql").read_text()
    conn = my_connect(url)
    try:
        with conn.cursor() as cur:
            for stmt in (s.strip() for s in schema.split(";")):
                if stmt and not all(line.startswith("--") for line in stmt.splitlines()):
                    cur.execute(stmt)
            cur.executemany(
                "INSERT INTO archivedotorg_artist (artist_key, name, collection, created_at) "
                "VALUES (%s, %s, %s, %s)",
                [(k, n, c, T0 - timedelta(days=400 - i)) for i, (k, n, c) in enumerate(ARTISTS)],
            )
            shows = []
            for i in range(640):
                artist = 1 + i % len(ARTISTS)
                day = datetime(1972, 1, 1) + timedelta(days=17 * i)
                key = ARTISTS[artist - 1][0].replace("-", "")
                ident = f"{key}{day:%Y-%m-%d}.sbd.{1000 + i}"
                shows.append(
                    (artist, ident, day.date(), VENUES[i % len(VENUES)] if i % 9 else None,
                     8 + i % 17, f"var/archivedotorg/metadata/{key}/{ident}.json")
                )  # fmt: skip
            if duplicate_show:  # the old importer stored one show twice (re-imported)
                shows.append((shows[5][0], shows[5][1], shows[5][2], "Red Rocks", 12, shows[5][5]))
            cur.executemany(
                "INSERT INTO archivedotorg_show_metadata (artist_id, identifier, show_date, "
                "venue, track_count, metadata_path) VALUES (%s, %s, %s, %s, %s, %s)",
                shows,
            )
            cur.executemany(
                "INSERT INTO archivedotorg_import_run (artist_id, status, started_at, "
                "finished_at, shows_imported, tracks_matched) VALUES (%s, %s, %s, %s, %s, %s)",
                [
                    (1 + i % len(ARTISTS), "failed" if i % 23 == 0 else "completed",
                     T0 - timedelta(hours=6 * i), T0 - timedelta(hours=6 * i - 1), 3 + i % 40,
                     (3 + i % 40) * 14)
                    for i in range(96)
                ],
            )  # fmt: skip
            cur.executemany(
                "INSERT INTO archivedotorg_studio_albums (artist_id, title, year) "
                "VALUES (%s, %s, %s)",
                [(1 + i % len(ARTISTS), f"Studio Album {i + 1}", 1970 + i) for i in range(40)],
            )
            cur.executemany(
                "INSERT INTO archivedotorg_unmatched_track (artist_id, show_identifier, "
                "track_title, metaphone, created_at) VALUES (%s, %s, %s, %s, %s)",
                [
                    (1 + i % len(ARTISTS), shows[i * 3][1], f"Jam > Untitled {i}", f"JMNTTL{i}",
                     T0 - timedelta(minutes=i))
                    for i in range(150)
                ],
            )  # fmt: skip
            cur.executemany(
                "INSERT INTO archivedotorg_artwork_overrides (artist_id, show_identifier, "
                "image_url) VALUES (%s, %s, %s)",
                [(s[0], s[1], f"https://archive.org/services/img/{s[1]}") for s in shows[:24]],
            )
            cur.executemany(
                "INSERT INTO archivedotorg_activity_log (artist_id, action, message, created_at) "
                "VALUES (%s, %s, %s, %s)",
                [
                    (None if i % 10 == 0 else 1 + i % len(ARTISTS),
                     ("download", "populate", "match")[i % 3], f"batch {i}: ok",
                     T0 - timedelta(minutes=5 * i))
                    for i in range(300)
                ],
            )  # fmt: skip
            cur.executemany(
                "INSERT INTO patch_list (patch_name) VALUES (%s)",
                [(f"ArchiveDotOrg\\Core\\Setup\\Patch\\Data\\Legacy\\Patch{i}",) for i in range(5)],
            )
            cur.executemany(
                "INSERT INTO cron_schedule (job_code, status, executed_at) VALUES (%s, %s, %s)",
                [("archivedotorg_import", "success", T0 - timedelta(hours=i)) for i in range(12)],
            )
            cur.execute("SHOW TABLES")
            names = [r[0] for r in cur.fetchall()]
            counts = {}
            for t in names:
                cur.execute(f"SELECT COUNT(*) FROM `{t}`")
                counts[t] = int(cur.fetchone()[0])
            return counts
    finally:
        conn.close()


@pytest.fixture
def magento(tm: Tm, mysql_url: str) -> Iterator[Path]:
    """A Magento root made of the rehearsal stand-in; the database URL in the environment."""
    root = tm.cwd / "magento"
    shutil.copytree(SEEDS / "archive-import" / "rehearsal" / "magento", root)
    tm.env["MAGENTO_DATABASE_URL"] = mysql_url
    yield root


ARCHIVE_ROLES = ["technical_lead", "product_owner", "operations"]


def test_archive_import_database_phase(tm: Tm, mysql_url: str, magento: Path) -> None:
    """000/001 archive-import, `Phase 1: Database` end to end: backup, test restore,
    maintenance on, `setup:upgrade` to 2.0.0, the 9-tables and indexes waits, maintenance off,
    verify `db_no_data_loss` and `foreign_keys_present`.

    Stand-ins: `bin/magento` is a bash script (archive-import/rehearsal/magento/bin/magento),
    not Magento. Its `maintenance:enable|disable` only create/remove `var/.maintenance.flag`
    (no real storefront is put into maintenance, so nothing checks that users see it); its
    `setup:upgrade` only pipes `app/code/ArchiveDotOrg/*/Setup/sql/<version>.sql` (one file,
    2.0.0.sql, written for the rehearsal) into `mariadb` and updates `setup_module`; its
    `setup:db:status` prints that version. None of Magento's own setup:upgrade work runs
    (module registration, data patches, caches, generated code). The Magento root is a copy of
    the stand-in directory: no Magento code. The 1.9.0 schema is
    `rehearsal/production-before.sql`; its rows are generated by `seed_magento` (8 artists,
    640 shows, ...).

    Reductions: `--phase "Phase 1: Database"`, `--skip-checklist` (the 80 phpunit tests,
    backup storage capacity, the health-check query and the manual items are not asked),
    `--var magento_root=<the copy>`, `MAGENTO_DATABASE_URL` set to a scratch database, and the
    three required approvals (technical_lead, product_owner, operations) given by the test.
    The phase's steps, waits and verify are run as written.

    Left out: phases 2-5 (code deploy, metadata folder migration, admin dashboard, the 30-day
    cleanup) never run, so nothing rehearses `metadata_no_data_loss` (file counts), the
    exception log, the modules/CLI checks, the dashboard or the 7-day `watch`. The phase's
    rollback (a `notify`) runs in the failure test and in the partial rollback after success
    (`tminus rollback --phase "Phase 1: Database"`) at the end of this test; the seed's own
    "Phase 3: restore metadata" is not rehearsed (phase 3 never runs).
    """
    counts = seed_magento(mysql_url)
    assert counts["archivedotorg_show_metadata"] == 640
    before = my_content(mysql_url)
    done = rehearse(
        tm, "archive-import.yaml", "Phase 1: Database", ARCHIVE_ROLES,
        "--var", f"magento_root={magento}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows = steps(tm)
    # the backup: every table, its exact row count, taken before anything changed
    (m,) = manifests(magento / "backups" / "db")
    assert m.kind == "mysql" and table_rows(m) == counts
    assert by_title(rows, "Test-restore the backup")["state"] == "succeeded"
    # the schema upgrade ran through the stand-in and reached 2.0.0
    migrate = by_title(rows, "Run schema migrations")
    assert migrate["artifacts"]["before"] == "1.9.0" and migrate["artifacts"]["after"] == "2.0.0"
    assert my_one(mysql_url, "SELECT schema_version FROM setup_module") == "2.0.0"
    tables = my_content(mysql_url)
    assert len([t for t in tables if t.startswith("archivedotorg_")]) == 9
    assert len(tables["archivedotorg_artist_status"][1]) == len(ARTISTS)
    assert my_one(mysql_url, "SELECT SUM(imports) FROM archivedotorg_daily_metrics") == 96
    for key in ("phase/0/verify/0", "phase/0/verify/1"):  # no data loss, foreign keys
        assert rows[key]["state"] == "succeeded", rows[key]
    assert all(len(tables[t][1]) == n for t, n in counts.items())  # every row still there
    assert not (magento / "var" / ".maintenance.flag").exists()
    deploy = tm.latest()
    assert deploy["state"] == "succeeded"
    # The seed's partial rollback, after success: `tminus rollback --phase` undoes only this
    # phase from what it recorded (the migrate step's restore of the backup, under
    # maintenance: a downtime phase), and the database is exactly as before the deploy.
    back = tm("rollback", deploy["id"], "--phase", "Phase 1: Database", "--reason", "rehearsal")
    assert back.returncode == 0, back.stdout + back.stderr
    assert my_content(mysql_url) == before
    assert not (magento / "var" / ".maintenance.flag").exists()
    assert tm.json("status", deploy["id"])["state"] == "rolled_back"


def test_archive_import_half_applied_migration_restores_the_backup(
    tm: Tm, mysql_url: str, magento: Path
) -> None:
    """A show stored twice makes 2.0.0's unique key fail after its CREATE TABLEs and indexes
    were committed (MySQL DDL is not transactional): the restore must bring back 1.9.0.

    Stand-ins: the same as test_archive_import_database_phase (a bash `bin/magento` applying
    one SQL file, a copied stand-in Magento root, a test-written database). The failure is
    provoked by the test's data (`duplicate_show=True`: one show row inserted twice), not by
    changing the plan.

    Reductions: as test_archive_import_database_phase (`--phase`, `--skip-checklist`,
    `--var magento_root`, scratch `MAGENTO_DATABASE_URL`, the three approvals by the test).

    Left out: the phase's rollback `notify` ("phase 1 rolled back") runs but reaches no
    channel (Slack, e-mail and status page are not delivered to; the test does not check it).
    Only the restore of the migrate step is asserted. No failure in a later phase (code,
    data, dashboard, cleanup) is rehearsed.
    """
    seed_magento(mysql_url, duplicate_show=True)
    before = my_content(mysql_url)
    done = rehearse(
        tm, "archive-import.yaml", "Phase 1: Database", ARCHIVE_ROLES,
        "--var", f"magento_root={magento}",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert tm.latest()["state"] == "rolled_back"
    rows = steps(tm)
    migrate = by_title(rows, "Run schema migrations")
    assert migrate["state"] == "failed" and "Duplicate entry" in migrate["error"]
    assert migrate["artifacts"].get("after") is None
    undo = [r for k, r in rows.items() if k.startswith("rollback/")]
    assert any(r["title"].startswith("Restore") and r["state"] == "succeeded" for r in undo), undo
    assert my_content(mysql_url) == before  # archivedotorg_artist_status & co. are gone again
    assert not (magento / "var" / ".maintenance.flag").exists()


# === 002 media-repository: PostgreSQL, sql_dir with a tested rollback =========================
MEDIA_SCHEMA = """
CREATE TABLE images (id bigserial PRIMARY KEY, owner_id bigint, filename text,
    mime_type text, size_bytes bigint, storage_key text NOT NULL, created_at timestamptz NOT NULL,
    width int, height int);
CREATE TABLE videos (id bigserial PRIMARY KEY, owner_id bigint, filename text,
    mime_type text, size_bytes bigint, storage_key text NOT NULL, created_at timestamptz NOT NULL,
    duration_s numeric(10, 3));
CREATE TABLE documents (id bigserial PRIMARY KEY, owner_id bigint, filename text,
    mime_type text, size_bytes bigint, storage_key text NOT NULL, created_at timestamptz NOT NULL,
    pages int);
CREATE INDEX images_owner ON images (owner_id);
"""
MEDIA_ROWS = {"images": 400, "videos": 120, "documents": 200}


def seed_media(url: str, *, nameless_video: bool = False) -> None:
    pg_exec(url, MEDIA_SCHEMA)
    extra = {
        "images": ("width, height", lambda i: (640 + i % 1280, 480 + i % 720)),
        "videos": ("duration_s", lambda i: (Decimal(i * 7919 % 3600000) / 1000,)),
        "documents": ("pages", lambda i: (1 + i % 300,)),
    }
    mimes = {"images": "image/jpeg", "videos": "video/mp4", "documents": "application/pdf"}
    for table, n in MEDIA_ROWS.items():
        cols, more = extra[table]
        rows = []
        for i in range(n):
            name = f"{table[:-1]}-{i:05d}.{mimes[table].split('/')[1]}"
            if nameless_video and table == "videos" and i == 57:
                name = None  # a legacy upload that never got a file name
            rows.append(
                (None if i % 13 == 0 else 1000 + i % 97, name, mimes[table],
                 10_000 + i * 4093 % 9_000_000, f"media/{table}/{i:05d}",
                 T0 - timedelta(minutes=11 * i), *more(i))
            )  # fmt: skip
        marks = ", ".join(["%s"] * (6 + len(cols.split(", "))))
        pg_exec(
            url,
            f"INSERT INTO {table} (owner_id, filename, mime_type, size_bytes, storage_key, "
            f"created_at, {cols}) VALUES ({marks})",
            rows,
        )


MEDIA_PHASE = "Phase 2: Database Migration"


def test_media_repository_migration_phase(tm: Tm, pg_url: str) -> None:
    """002 media-repository, `Phase 2: Database Migration` end to end: maintenance on,
    snapshot, backup, migration 001 up, the "all migrated" wait, the test rollback (down, old
    state checked), a test restore, the migration again, the `notify`; verify
    `media_migrated`, `record_counts_unchanged`, `db_permissions`.

    Stand-ins: maintenance mode is the plan's own flag file
    (`.tminus/rehearsal/media-repository/maintenance.flag`): no application reads it, so
    nothing shows that users are actually kept out. The legacy tables (images, videos,
    documents) are the test's `MEDIA_SCHEMA` with generated rows, not the production schema.
    The migration files are the plan's (`media-repository/migrations/001_unified_media.*`).

    Reductions: `--phase "Phase 2: Database Migration"`, `--skip-checklist` (SSH access,
    database access, backup system, source tag, TypeScript build, monitoring and the manual
    items are not asked), `DATABASE_URL` set to a scratch database, and the `deployment_lead`
    approval given by the test. The phase's steps and verify are run as written; only `verify/0`
    and `verify/1` are asserted by name (the third, `db_permissions`, passes because the deploy
    succeeds). The `estimate: 2h` and the migration's `timeout: 90m` are never approached.

    Left out: phase 1 (preparation, the full backup), phases 3-5
    (backend on `127.0.0.1:2211`, frontend, post-deployment verification: API, security
    headers, performance probe) never run; the Prometheus monitoring checks and the `watch`
    are not rehearsed; the `notify` step "Document rollback test results" reaches no channel.
    """
    seed_media(pg_url)
    tm.env["DATABASE_URL"] = pg_url
    done = rehearse(tm, "media-repository.yaml", MEDIA_PHASE, ["deployment_lead"])
    assert done.returncode == 0, done.stdout + done.stderr
    rows = steps(tm)
    (m,) = manifests(tm.cwd / ".tminus" / "rehearsal" / "media-repository" / "backups")
    assert table_rows(m) == {f"public.{t}": n for t, n in MEDIA_ROWS.items()}
    assert m.details["checksum"] == "chain64"
    # migrated to version 1, through the tested rollback (down to 0 and up again)
    assert pg_one(pg_url, "SELECT version, dirty FROM schema_migrations") == (1, False)
    assert pg_one(pg_url, "SELECT count(*) FROM media_items") == sum(MEDIA_ROWS.values())
    versions = [
        (by_title(rows, t)["artifacts"].get("before"), by_title(rows, t)["artifacts"].get("after"))
        for t in ("Execute media unification", "Perform a test rollback", "Re-run the migration")
    ]
    assert versions == [(None, 1), (1, None), (None, 1)]
    assert by_title(rows, "Test the restore of the migration backup")["state"] == "succeeded"
    for key in ("phase/1/verify/0", "phase/1/verify/1"):  # all migrated, no rows lost
        assert rows[key]["state"] == "succeeded", rows[key]
    assert not (tm.cwd / ".tminus" / "rehearsal" / "media-repository" / "maintenance.flag").exists()


def test_media_repository_failed_migration_restores_the_backup(tm: Tm, pg_url: str) -> None:
    """A legacy video without a file name breaks the unified table's NOT NULL: the migration
    fails (leaving schema_migrations dirty), and the rollback restores the backup taken just
    before it, schema_migrations included.

    Stand-ins: as test_media_repository_migration_phase (the plan's maintenance flag file that
    no application reads, the test's legacy schema and rows). The failure comes from the
    test's data (`nameless_video=True`: video 57 without a file name), not from the plan.

    Reductions: as test_media_repository_migration_phase (`--phase`, `--skip-checklist`,
    scratch `DATABASE_URL`, the `deployment_lead` approval by the test).

    Left out: only a failure of the first `migrate` step is rehearsed; a failure of the test
    rollback, of the test restore or of the re-run migration (all `on_rollback: none`) is
    not, and neither is any later phase's rollback.
    """
    seed_media(pg_url, nameless_video=True)
    before = pg_content(pg_url)
    tm.env["DATABASE_URL"] = pg_url
    done = rehearse(tm, "media-repository.yaml", MEDIA_PHASE, ["deployment_lead"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert tm.latest()["state"] == "rolled_back"
    rows = steps(tm)
    migrate = by_title(rows, "Execute media unification migration")
    assert migrate["state"] == "failed" and "filename" in migrate["error"]
    undo = [r for k, r in rows.items() if k.startswith("rollback/")]
    assert any(r["title"].startswith("Restore") and r["state"] == "succeeded" for r in undo), undo
    assert pg_content(pg_url) == before  # no media_items, no (dirty) schema_migrations
    assert not (tm.cwd / ".tminus" / "rehearsal" / "media-repository" / "maintenance.flag").exists()


# === 003 proofile-web: PostgreSQL with alembic ================================================
PROOFILE_SCHEMA = """
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE, password_hash text NOT NULL,
    is_active boolean NOT NULL DEFAULT true, created_at timestamptz NOT NULL);
CREATE TABLE profiles (id serial PRIMARY KEY, user_id int NOT NULL UNIQUE REFERENCES users (id),
    display_name text NOT NULL, headline text, skills jsonb NOT NULL DEFAULT '[]',
    updated_at timestamptz NOT NULL);
"""


def seed_proofile(url: str, n: int = 500) -> None:
    pg_exec(url, PROOFILE_SCHEMA)
    pg_exec(
        url,
        "INSERT INTO users (email, password_hash, is_active, created_at) VALUES (%s, %s, %s, %s)",
        [
            (f"user{i}@proofile.dev", f"$argon2id$v=19$m=65536,t=3,p=4${i:08x}", i % 17 != 0,
             T0 - timedelta(hours=i))
            for i in range(1, n + 1)
        ],
    )  # fmt: skip
    pg_exec(
        url,
        "INSERT INTO profiles (user_id, display_name, headline, skills, updated_at) "
        "VALUES (%s, %s, %s, %s, %s)",
        [
            (i, f"User {i}", None if i % 5 == 0 else f"Engineer #{i}",
             json.dumps(["python", "sql", "k8s"][: 1 + i % 3]), T0 - timedelta(minutes=i))
            for i in range(1, n + 1)
        ],
    )  # fmt: skip


@pytest.fixture
def proofile_repo(tm: Tm) -> Path:
    """The backend repository (with an `origin` to push the backup tag to)."""
    origin = tm.cwd / "origin.git"
    repo = tm.cwd / "repo"
    env = {**os.environ, "GIT_AUTHOR_NAME": "r", "GIT_AUTHOR_EMAIL": "r@x",
           "GIT_COMMITTER_NAME": "r", "GIT_COMMITTER_EMAIL": "r@x"}  # fmt: skip
    for argv in (
        ["git", "init", "-q", "--bare", str(origin)],
        ["git", "init", "-q", str(repo)],
        ["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "prod-v1.1.0"],
        ["git", "-C", str(repo), "remote", "add", "origin", str(origin)],
    ):
        subprocess.run(argv, check=True, env=env, capture_output=True)
    tm.env["PROOFILE_REPO"] = str(repo)
    return origin


PROOFILE_PHASE = "Day 1: Backup and Database Migration"


def test_proofile_web_alembic_phase(tm: Tm, pg_url: str, proofile_repo: Path) -> None:
    """003 proofile-web, `Day 1: Backup and Database Migration` end to end: git tag pushed to
    origin, backup, test restore, snapshot, `alembic upgrade head`; verify `no_data_loss` and
    `schema_at_release`.

    Stand-ins: the backend repository is an empty local git repository (one empty commit)
    with a local bare repository as `origin` (the `proofile_repo` fixture), not the proofile
    code. The alembic environment and its single revision `0001_sprint_7_5` (it creates
    `web_vitals_samples`) are the plan's own files under `proofile-web/alembic/`, standing in
    for the release's migrations. The users/profiles tables are the test's `PROOFILE_SCHEMA`
    with 500 generated users and profiles.

    Reductions: `--phase "Day 1: Backup and Database Migration"` (this phase exists only in the
    plan: the seed ran the migration inside its canary phase), `--skip-checklist` (staging error
    rate, monitoring, the database/Redis/TLS certificate checks and the manual items are not
    asked), `PROOFILE_REPO` and `DATABASE_URL` set by the test, the `release_manager` approval
    given by the test. The phase's steps and verify are run as written.

    Left out: the canary phases and the sign-off phases are not run here (phases 2 and 3 are
    rehearsed in test_seed_progressive.py; phase 1, the 5% canary, and the Day 1, Day 7 and
    Week 2-4 sign-offs are rehearsed nowhere). Redis and docker-compose play no part.
    """
    seed_proofile(pg_url)
    tm.env["DATABASE_URL"] = pg_url
    done = rehearse(tm, "proofile-web.yaml", PROOFILE_PHASE, ["release_manager"])
    assert done.returncode == 0, done.stdout + done.stderr
    rows = steps(tm)
    (m,) = manifests(tm.cwd / ".tminus" / "backups")
    assert table_rows(m) == {"public.users": 500, "public.profiles": 500}
    assert by_title(rows, "Test-restore the backup")["state"] == "succeeded"
    migrate = by_title(rows, "Run migrations (alembic upgrade head)")
    assert migrate["artifacts"].get("before") is None  # at base before
    assert migrate["artifacts"]["after"] == "0001_sprint_7_5"
    assert pg_one(pg_url, "SELECT version_num FROM alembic_version") == "0001_sprint_7_5"
    assert pg_one(pg_url, "SELECT to_regclass('web_vitals_samples') IS NOT NULL") is True
    for key in ("phase/0/verify/0", "phase/0/verify/1"):  # no data loss, release revision
        assert rows[key]["state"] == "succeeded", rows[key]
    tags = subprocess.run(
        ["git", "-C", str(proofile_repo), "tag"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert tags == ["prod-backup-proofile-web-1"]


def test_proofile_web_unexpected_head_downgrades(tm: Tm, pg_url: str, proofile_repo: Path) -> None:
    """The release expects another revision than the branch's head: the check fails after the
    migration committed, and the rollback downgrades alembic to base again.

    Stand-ins: as test_proofile_web_alembic_phase (an empty git repository with a local
    `origin`, the plan's one alembic revision, the test's tables and rows).

    Reductions: as test_proofile_web_alembic_phase, plus `--var
    alembic_revision=0002_sprint_7_6`: the failure is made by the test telling the plan to
    expect a revision that does not exist, not by a migration that goes wrong.

    Left out: a migration that itself fails half-way is not rehearsed. The rollback's
    `git tag` is not undone and the test does not look at it (the pushed
    `prod-backup-<deploy>` tag stays in `origin`).
    """
    seed_proofile(pg_url)
    before = pg_content(pg_url)
    tm.env["DATABASE_URL"] = pg_url
    done = rehearse(
        tm, "proofile-web.yaml", PROOFILE_PHASE, ["release_manager"],
        "--var", "alembic_revision=0002_sprint_7_6",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert tm.latest()["state"] == "rolled_back"
    rows = steps(tm)
    assert rows["phase/0/verify/0"]["state"] == "succeeded"  # nothing lost …
    assert rows["phase/0/verify/1"]["state"] == "failed"  # … but the wrong revision
    undo = [r for k, r in rows.items() if k.startswith("rollback/")]
    assert [r["state"] for r in undo] == ["succeeded"] and "alembic" in undo[0]["title"].lower()
    after = pg_content(pg_url)
    # alembic keeps its (now empty) version table after a downgrade to base; all else as before
    assert after.pop("public.alembic_version") == (["version_num"], [])
    assert after == before


# === 004 svetu-unified-attributes: PostgreSQL with up/down SQL migrations =====================
SVETU_SCHEMA = """
CREATE TABLE listings (id bigserial PRIMARY KEY, title text NOT NULL, category_id bigint NOT NULL,
    price numeric(12, 2), created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE category_attributes (id bigserial PRIMARY KEY, name varchar(100) NOT NULL,
    display_name varchar(255), attribute_type varchar(50) NOT NULL, options jsonb,
    is_searchable boolean NOT NULL DEFAULT false, is_filterable boolean NOT NULL DEFAULT false);
CREATE TABLE category_attribute_mapping (category_id bigint NOT NULL,
    attribute_id bigint NOT NULL REFERENCES category_attributes (id),
    is_required boolean NOT NULL DEFAULT false, sort_order int NOT NULL DEFAULT 0,
    PRIMARY KEY (category_id, attribute_id));
CREATE TABLE listing_attribute_values (listing_id bigint NOT NULL REFERENCES listings (id),
    attribute_id bigint NOT NULL REFERENCES category_attributes (id), text_value text,
    numeric_value numeric(20, 6), boolean_value boolean, json_value jsonb,
    PRIMARY KEY (listing_id, attribute_id));
"""
ATTRIBUTES = [
    ("brand", "Marka", "select"), ("model", "Model", "text"), ("year", "Godište", "number"),
    ("mileage", "Kilometraža", "number"), ("fuel", "Gorivo", "select"),
    ("rooms", "Broj soba", "number"), ("area", "Površina", "number"),
    ("furnished", "Namešten", "boolean"), ("color", "Boja", "select"),
    ("size", "Veličina", "select"), ("condition", "Stanje", "select"),
    ("warranty", "Garancija", "boolean"),
]  # fmt: skip


def seed_svetu(url: str, *, duplicate_name: bool = False) -> dict[str, int]:
    """A marketplace: listings in 6 categories, 12 attributes (13 with a duplicate), values."""
    pg_exec(url, SVETU_SCHEMA)
    attrs = list(ATTRIBUTES)
    if duplicate_name:  # "color" created a second time by another admin, for clothing
        attrs.append(("color", "Boja (odeća)", "select"))
    pg_exec(
        url,
        "INSERT INTO category_attributes (name, display_name, attribute_type, options, "
        "is_searchable, is_filterable) VALUES (%s, %s, %s, %s, %s, %s)",
        [
            (n, d, t, json.dumps({"values": ["a", "b"]}) if t == "select" else None,
             i % 2 == 0, t != "text")
            for i, (n, d, t) in enumerate(attrs)
        ],
    )  # fmt: skip
    mapping = [(c, a, a % 3 == 0, a) for c in range(1, 7) for a in range(1, len(attrs) + 1)
               if (a + c) % 2 == 0 or a == len(attrs)]  # fmt: skip
    pg_exec(
        url,
        "INSERT INTO category_attribute_mapping VALUES (%s, %s, %s, %s)",
        mapping,
    )
    pg_exec(
        url,
        "INSERT INTO listings (title, category_id, price, created_at, updated_at) "
        "VALUES (%s, %s, %s, %s, %s)",
        [
            (f"Oglas {i}", 1 + i % 6, Decimal(i * 137 % 100000) / 4, T0 - timedelta(hours=i),
             T0 - timedelta(minutes=i))
            for i in range(1, 301)
        ],
    )  # fmt: skip
    by_cat: dict[int, list[int]] = {}
    for c, a, _, _ in mapping:
        by_cat.setdefault(c, []).append(a)
    values = []
    for listing in range(1, 301):
        attrs_of = by_cat[1 + listing % 6]
        for a in attrs_of[:4] + attrs_of[-1:]:  # the last: in every category
            kind = attrs[a - 1][2]
            values.append(
                (listing, a, f"v{listing}-{a}" if kind in ("text", "select") else None,
                 Decimal(listing * a) / 7 if kind == "number" else None,
                 listing % 2 == 0 if kind == "boolean" else None, None)
            )  # fmt: skip
    pg_exec(url, "INSERT INTO listing_attribute_values VALUES (%s, %s, %s, %s, %s, %s)", values)
    return {
        "public.listings": 300,
        "public.category_attributes": len(attrs),
        "public.category_attribute_mapping": len(mapping),
        "public.listing_attribute_values": len(values),
    }


SVETU_PHASE = "Phase 2: Database Migration (Day 13)"
SVETU_ROLES = ["product_team", "devops_team"]


def test_svetu_up_down_migration_phase(tm: Tm, pg_url: str) -> None:
    """004 svetu-unified-attributes, `Phase 2: Database Migration (Day 13)` end to end: backup,
    test restore, snapshot, migrations 000034 and 000035; verify `data_integrity` ("Verify data
    integrity") and `no_data_loss`.

    Stand-ins: the legacy tables (listings, category_attributes, category_attribute_mapping,
    listing_attribute_values) are the test's `SVETU_SCHEMA` with generated rows (300 listings,
    12 attributes), not the production schema. The migrations are the plan's files
    (`svetu-unified-attributes/migrations/00003{4,5}_*`).

    Reductions: `--phase "Phase 2: Database Migration (Day 13)"`, `--skip-checklist` (CI tests,
    monitoring dashboards and the manual items are not asked), `DATABASE_URL` set to a scratch
    database, the `product_team` and `devops_team` approvals given by the test. The phase's
    steps and verify are run as written. The seed's 10-minute "verify data integrity" wait is,
    in the plan itself, a verify check.

    Left out: `Phase 2b: Read Replica Sync` is deliberately not selected (it would block every
    commit on a server without the standby), so synchronous replication, the replica
    (`127.0.0.1:5433`) and `replication_lag` are rehearsed nowhere. No dual-write runs
    (`dual_write_working` is not checked). Phases 1, 3, 4, 6, Day 22, Day 23 and Month 1 never
    run (phase 5 is in test_seed_progressive.py).
    """
    counts = seed_svetu(pg_url)
    tm.env["DATABASE_URL"] = pg_url
    done = rehearse(tm, "svetu-unified-attributes.yaml", SVETU_PHASE, SVETU_ROLES)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = steps(tm)
    backups = tm.cwd / ".tminus" / "rehearsal" / "svetu-unified-attributes" / "backups"
    (m,) = manifests(backups)
    assert table_rows(m) == counts
    assert by_title(rows, "Test-restore the backup")["state"] == "succeeded"
    assert pg_one(pg_url, "SELECT version, dirty FROM schema_migrations") == (35, False)
    assert [
        (r["artifacts"].get("before"), r["artifacts"]["after"])
        for r in sorted(rows.values(), key=lambda r: r["title"])
        if r["title"].startswith("Apply migration")
    ] == [(None, 34), (34, 35)]
    unified = pg_one(pg_url, "SELECT count(*) FROM unified_attribute_values")
    assert unified == counts["public.listing_attribute_values"]
    assert pg_one(pg_url, "SELECT count(*) FROM unified_attributes") == len(ATTRIBUTES)
    for key in ("phase/1/verify/0", "phase/1/verify/1"):  # data integrity, no data loss
        assert rows[key]["state"] == "succeeded", rows[key]
    assert not any(k.startswith("phase/2/") for k in rows)  # replica sync: not selected


def test_svetu_skipped_values_fail_integrity_and_migrate_down(tm: Tm, pg_url: str) -> None:
    """Two legacy attributes named "color": 000035 keeps one (ON CONFLICT (code) DO NOTHING)
    and silently skips the other's values. The integrity check catches it, and the down
    migrations (000035, then 000034) leave the legacy tables exactly as they were.

    Stand-ins: as test_svetu_up_down_migration_phase (the test's legacy schema and rows). The
    failure comes from the test's data (`duplicate_name=True`: a 13th attribute, a second
    `color`), not from the plan.

    Reductions: as test_svetu_up_down_migration_phase (`--phase`, `--skip-checklist`, scratch
    `DATABASE_URL`, the two approvals by the test).

    Left out: the rollback asserted is the two `down` migrations; the backup taken in the
    phase is not restored (the plan does not ask for it), and the replica is not involved.
    """
    seed_svetu(pg_url, duplicate_name=True)
    before = pg_content(pg_url)
    tm.env["DATABASE_URL"] = pg_url
    done = rehearse(tm, "svetu-unified-attributes.yaml", SVETU_PHASE, SVETU_ROLES)
    assert done.returncode == 1, done.stdout + done.stderr
    assert tm.latest()["state"] == "rolled_back"
    rows = steps(tm)
    assert rows["phase/1/verify/0"]["state"] == "failed"
    assert "Verify data integrity" in rows["phase/1/verify/0"]["title"]
    undo = [r for k, r in sorted(rows.items()) if k.startswith("rollback/")]
    assert [r["state"] for r in undo] == ["succeeded", "succeeded"], undo
    after = pg_content(pg_url)
    # golang-migrate's table stays, empty: "no migration applied"; the rest is as before
    assert after.pop("public.schema_migrations") == (["version", "dirty"], [])
    assert after == before
