"""Issue #12: restoring a backup an earlier deploy made — ``from: {deploy: latest|ID, backup:
NAME}`` in an operation, resolved (fail closed) before any step runs, and ``tminus backups
restore`` — on real PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import Tm
from tminus.sqlrun import engine_url
from tminus.store import Store

ROWS = 200
EXPECTED = [(i, f"item-{i}") for i in range(1, ROWS + 1)]


def _plan(kind: str, url: str, *, restore_from: str = "{deploy: latest, backup: db_backup}") -> str:
    values = ", ".join(f"({i}, 'item-{i}')" for i in range(1, ROWS + 1))
    return f"""
name: shop
environment: test
targets:
  databases:
    app: {{kind: {kind}, url: "{url}", tables: [items]}}
phases:
  - name: seed
    steps:
      - kind: sql
        database: app
        statements:
          - "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL)"
          - "DELETE FROM items"
          - "INSERT INTO items (id, name) VALUES {values}"
  - name: backup
    steps:
      - {{kind: backup, id: db_backup, database: app}}
operations:
  restore_db:
    description: Put the data back as the last deploy's backup has it.
    dangerous: true
    steps:
      - {{kind: run, name: stop app, command: "touch app.stopped"}}
      - {{kind: restore, from: {restore_from}, database: app}}
      - {{kind: run, name: start app, command: "rm app.stopped"}}
  verify_db:
    description: Test-restore the last deploy's backup into a scratch database.
    steps:
      - {{kind: verify_backup, from: {restore_from}}}
"""


@pytest.fixture(params=["postgres", "mysql"])
def database(request: pytest.FixtureRequest) -> tuple[str, str]:
    fixture = "pg_url" if request.param == "postgres" else "mysql_url"
    return request.param, str(request.getfixturevalue(fixture))


def _sql(kind: str, url: str, *statements: str) -> list[tuple[Any, ...]]:
    engine = create_engine(engine_url(kind, url))
    try:
        with engine.begin() as conn:
            for s in statements:
                conn.execute(text(s))
            return [tuple(r) for r in conn.execute(text("SELECT id, name FROM items ORDER BY id"))]
    finally:
        engine.dispose()


def _damage(kind: str, url: str) -> None:
    rows = _sql(kind, url, "DELETE FROM items WHERE id % 4 = 0", "UPDATE items SET name = 'x'")
    assert rows != EXPECTED


def _store(tm: Tm) -> Store:
    return Store(f"sqlite:///{tm.cwd / '.tminus' / 'state.db'}")


def _restore_artifacts(tm: Tm, deploy_id: str) -> dict[str, Any]:
    rows = _store(tm).step_rows(deploy_id).values()
    found = [r["artifacts"] for r in rows if (r["artifacts"] or {}).get("from_deploy")]
    assert len(found) == 1, rows
    return dict(found[0])


def test_operation_restores_the_latest_deploys_backup(tm: Tm, database: tuple[str, str]) -> None:
    """The finding, reproduced: a deploy backs up, the data is damaged afterwards, and the
    operation stops the app, restores that deploy's backup and starts the app again. The rows
    are exactly those backed up; what was restored is recorded in the step's artifacts."""
    kind, url = database
    (tm.cwd / "p.yaml").write_text(_plan(kind, url))
    tm("check", "p.yaml", check=0)
    tm("run", "p.yaml", timeout=300, check=0)
    _damage(kind, url)
    proc = tm("op", "run", "p.yaml", "verify_db", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"verified: 1 tables, {ROWS} rows match the manifest" in proc.stdout
    proc = tm("op", "run", "p.yaml", "restore_db", "--yes", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _sql(kind, url) == EXPECTED, "the restore must bring back every row, unchanged"
    assert not (tm.cwd / "app.stopped").exists(), "the app was started again"
    arts = _restore_artifacts(tm, "shop.op.restore_db-1")
    backup = _store(tm).artifacts_by_step_id("shop-1")["db_backup"]
    assert arts["from_deploy"] == "shop-1" and arts["backup_id"] == backup["backup_id"]
    assert arts["dir"] == backup["dir"] and len(arts["manifest_sha256"]) == 64
    assert "(backup 'db_backup' of deploy shop-1)" in proc.stdout


def test_operation_without_an_earlier_backup_stops_nothing(
    tm: Tm, database: tuple[str, str]
) -> None:
    """No deploy has recorded the backup: exit 2 with the reason before any step ran; the
    app was never stopped and no operation deploy exists.

    Mutation tried: the restore preflight returns [] for a ``{deploy: …}`` reference → the
    stop step runs, the restore fails at run time, the flag stays (the finding)."""
    kind, url = database
    (tm.cwd / "p.yaml").write_text(_plan(kind, url))
    _sql(kind, url, "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL)")
    proc = tm("op", "run", "p.yaml", "restore_db", "--yes", timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "nothing was run" in proc.stderr
    assert "no earlier deploy of plan 'shop' in test recorded a backup 'db_backup'" in proc.stderr
    assert not (tm.cwd / "app.stopped").exists(), "the app must not have been stopped"
    proc = tm("op", "run", "p.yaml", "verify_db", timeout=300)
    assert proc.returncode == 2 and "nothing was run" in proc.stderr, proc.stderr
    assert tm.json("list") == [], "no deploy was created"


def test_latest_passes_over_a_damaged_backup(tm: Tm, pg_url: str) -> None:
    """`latest` is the newest deploy whose backup verifies: the newest one is damaged, so the
    one before is restored and the newer one is named as passed over.

    Mutation tried: ``find_backup`` takes the newest recorded backup without checking its
    files (``require_intact`` dropped from ``load_recorded``) → the damaged backup is chosen,
    the restore step refuses it after the app was stopped: exit 1, flag left behind."""
    (tm.cwd / "p.yaml").write_text(_plan("postgres", pg_url))
    tm("run", "p.yaml", timeout=300, check=0)
    tm("run", "p.yaml", timeout=300, check=0)
    newest = _store(tm).artifacts_by_step_id("shop-2")["db_backup"]
    dump = max(
        (p for p in Path(newest["dir"]).rglob("*") if p.is_file() and p.name != "manifest.json"),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    _damage("postgres", pg_url)
    proc = tm("op", "run", "p.yaml", "restore_db", "--yes", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _sql("postgres", pg_url) == EXPECTED
    assert not (tm.cwd / "app.stopped").exists()
    arts = _restore_artifacts(tm, "shop.op.restore_db-1")
    assert arts["from_deploy"] == "shop-1"
    assert arts["skipped"] and arts["skipped"][0].startswith("shop-2:"), arts


def test_a_deploy_id_names_an_older_backup(tm: Tm, pg_url: str) -> None:
    """``{deploy: shop-1, backup: db_backup}`` restores shop-1's backup although shop-2 made a
    newer one (with other data); an unknown deploy is refused before anything runs."""
    (tm.cwd / "p.yaml").write_text(_plan("postgres", pg_url))
    tm("run", "p.yaml", timeout=300, check=0)
    (tm.cwd / "p.yaml").write_text(_plan("postgres", pg_url).replace("item-", "other-"))
    tm("run", "p.yaml", timeout=300, check=0)
    assert _sql("postgres", pg_url)[0] == (1, "other-1")
    pinned = "{deploy: shop-1, backup: db_backup}"
    (tm.cwd / "p.yaml").write_text(_plan("postgres", pg_url, restore_from=pinned))
    proc = tm("op", "run", "p.yaml", "restore_db", "--yes", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _sql("postgres", pg_url) == EXPECTED
    assert _restore_artifacts(tm, "shop.op.restore_db-1")["from_deploy"] == "shop-1"
    unknown = "{deploy: shop-9, backup: db_backup}"
    (tm.cwd / "p.yaml").write_text(_plan("postgres", pg_url, restore_from=unknown))
    proc = tm("op", "run", "p.yaml", "restore_db", "--yes", timeout=300)
    assert proc.returncode == 2 and "no deploy 'shop-9'" in proc.stderr, proc.stderr
    assert not (tm.cwd / "app.stopped").exists()


def test_check_validates_the_from_forms(tm: Tm) -> None:
    """`tminus check`: a bare id in an operation naming the deployment's backup is an error
    with a hint to use the ``{deploy: …}`` form (that plan passed check and failed at run
    time, after stopping the app); ``{deploy: latest, backup: NAME}`` needs NAME to be a
    backup step of the plan.

    Mutation tried: drop the same-deploy comparison (``_deploy_of``) in validate.py → the
    bare form passes check again."""
    url = f"sqlite:///{tm.cwd / 'app.db'}"
    (tm.cwd / "ok.yaml").write_text(_plan("sqlite", url))
    tm("check", "ok.yaml", check=0)
    (tm.cwd / "bare.yaml").write_text(_plan("sqlite", url, restore_from="db_backup"))
    proc = tm("check", "bare.yaml", "--output", "json")
    assert proc.returncode == 2, proc.stdout
    problems = json.loads(proc.stdout)
    problems = problems.get("problems", problems) if isinstance(problems, dict) else problems
    codes = {p["code"]: p for p in problems if p["severity"] == "error"}
    assert "backup-of-another-deploy" in codes, problems
    assert "{deploy: latest, backup: db_backup}" in codes["backup-of-another-deploy"]["hint"]
    proc = tm("op", "run", "bare.yaml", "restore_db", "--yes")
    assert proc.returncode == 2 and "backup-of-another-deploy" in proc.stderr, proc.stderr
    assert not (tm.cwd / "app.stopped").exists(), "the operation must not start"
    (tm.cwd / "typo.yaml").write_text(
        _plan("sqlite", url, restore_from="{deploy: latest, backup: db_bakup}")
    )
    proc = tm("check", "typo.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "no backup step with id 'db_bakup' in the plan" in out, out
    assert "did you mean 'db_backup'" in out.lower(), out


def test_backups_restore_cli(tm: Tm, database: tuple[str, str]) -> None:
    """`tminus backups restore ID --to URL`: refused without --yes outside a terminal
    (exit 2, nothing done); with --yes the rows are restored exactly, a line says so and the
    deploy that made the backup logs it; a damaged backup is refused (exit 1) and the target
    is left alone.

    Mutation tried: skip the confirmation (``if not yes:`` never taken) → the first call
    restores without being confirmed (exit 0)."""
    kind, url = database
    (tm.cwd / "p.yaml").write_text(_plan(kind, url))
    tm("run", "p.yaml", timeout=300, check=0)
    backup_id = _store(tm).artifacts_by_step_id("shop-1")["db_backup"]["backup_id"]
    _damage(kind, url)
    damaged = _sql(kind, url)
    proc = tm("backups", "restore", backup_id, "--to", url)
    assert proc.returncode == 2 and "--yes" in proc.stderr, proc.stderr
    assert _sql(kind, url) == damaged, "nothing was done"
    proc = tm("backups", "restore", backup_id, "--to", url, "--yes", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _sql(kind, url) == EXPECTED
    assert f"alice restored backup {backup_id}" in proc.stdout
    assert "recorded in the log of shop-1" in proc.stdout
    events = [e for e in tm.json("log", "shop-1") if e["type"] == "backup.restored"]
    assert len(events) == 1 and backup_id in events[0]["message"], events
    # --plan: --to names a target of the plan, its URL resolved from the plan
    _damage(kind, url)
    proc = tm("backups", "restore", backup_id, "--plan", "p.yaml", "--to", "app", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _sql(kind, url) == EXPECTED
    # a damaged copy is refused before the target is touched
    _damage(kind, url)
    damaged = _sql(kind, url)
    bdir = Path(_store(tm).artifacts_by_step_id("shop-1")["db_backup"]["dir"])
    copy = tm.cwd / "copy" / backup_id
    shutil.copytree(bdir, copy)
    dump = max(
        (p for p in copy.rglob("*") if p.is_file() and p.name != "manifest.json"),
        key=lambda p: p.stat().st_size,
    )
    dump.write_bytes(dump.read_bytes()[:-10])
    proc = tm("backups", "restore", backup_id, "--to", url, "--yes", "--dir", str(copy.parent))
    assert proc.returncode == 1 and "truncated" in proc.stderr, proc.stderr
    assert _sql(kind, url) == damaged, "a damaged backup must not touch the target"
