"""Data safety through the engine: back up, break the data, roll back by restoring; refuse a
damaged backup; no_data_loss; preflight; `tminus backups` — on real PostgreSQL, MariaDB and
SQLite."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import Tm
from tminus.sqlrun import engine_url

ROWS = 300


def _seed_sql() -> list[str]:
    values = ", ".join(f"({i}, 'item-{i}')" for i in range(1, ROWS + 1))
    return [
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(40) NOT NULL)",
        "CREATE INDEX items_name ON items (name)",
        f"INSERT INTO items (id, name) VALUES {values}",
    ]


def _plan(kind: str, url: str, *, verify: str = "no_data_loss", extra: str = "") -> str:
    seed = "\n".join(f'          - "{s}"' for s in _seed_sql())
    return f"""
name: datasafe
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
{seed}
  - name: migrate
    steps:
      - {{kind: backup, id: db_backup, database: app}}
      - {{kind: snapshot, id: before, databases: [app]}}
      - kind: sql
        name: a migration that breaks data
        database: app
        statements:
          - "DELETE FROM items WHERE id % 3 = 0"
          - "UPDATE items SET name = 'broken'"
{extra}
    verify:
      - {{source: {verify}, snapshot: before}}
    rollback:
      - {{kind: restore, from: db_backup}}
"""


def _rows(kind: str, url: str) -> list[tuple[Any, ...]]:
    engine = create_engine(engine_url(kind, url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT id, name FROM items ORDER BY id"))]
    finally:
        engine.dispose()


EXPECTED = [(i, f"item-{i}") for i in range(1, ROWS + 1)]


@pytest.fixture(params=["postgres", "mysql", "sqlite"])
def database(request: pytest.FixtureRequest, tm: Tm) -> tuple[str, str]:
    if request.param == "postgres":
        return "postgres", str(request.getfixturevalue("pg_url"))
    if request.param == "mysql":
        return "mysql", str(request.getfixturevalue("mysql_url"))
    return "sqlite", f"sqlite:///{tm.cwd / 'app.db'}"


def test_breaking_migration_is_caught_and_restored(tm: Tm, database: tuple[str, str]) -> None:
    kind, url = database
    (tm.cwd / "p.yaml").write_text(_plan(kind, url))
    proc = tm("run", "p.yaml", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "lost 100 row(s)" in proc.stdout
    assert tm.latest()["state"] == "rolled_back"
    assert _rows(kind, url) == EXPECTED, "the restore must bring back every row, unchanged"
    log = tm.json("log", "datasafe-1")
    restored = [e for e in log if e["type"] == "step.succeeded" and "rollback" in (e["key"] or "")]
    assert restored, "the phase's restore rollback step ran"


def test_damaged_backup_is_refused_and_target_untouched(tm: Tm, pg_url: str) -> None:
    corrupt = (
        "      - kind: run\n"
        "        name: corrupt the backup\n"
        "        command: >-\n"
        '          python3 -c "import pathlib, sys; d = pathlib.Path(sys.argv[1]);'
        " f = max((p for p in d.rglob('*') if p.is_file() and p.name != 'manifest.json'),"
        " key=lambda p: p.stat().st_size); b = bytearray(f.read_bytes());"
        ' b[len(b) // 2] ^= 0xFF; f.write_bytes(bytes(b))" ${artifact:db_backup.dir}\n'
        "      - {kind: restore, name: restore the damaged backup, from: db_backup}\n"
    )
    plan = (
        _plan("postgres", pg_url)
        .replace(
            '          - "DELETE FROM items WHERE id % 3 = 0"\n'
            "          - \"UPDATE items SET name = 'broken'\"\n",
            "          - \"UPDATE items SET name = 'changed' WHERE id = 1\"\n",
        )
        .replace("{extra}", "")
    )
    plan = plan.replace("    verify:\n", corrupt + "    on_failure: pause\n    verify:\n", 1)
    (tm.cwd / "p.yaml").write_text(plan)
    proc = tm("run", "p.yaml", timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    reason = tm.latest()["reason"]
    assert "damaged" in reason and "refusing" in reason, reason
    rows = _rows("postgres", pg_url)
    assert rows[0] == (1, "changed"), "a refused restore must not touch the target"


def test_no_data_loss_passes_when_nothing_is_lost(tm: Tm) -> None:
    url = f"sqlite:///{tm.cwd / 'app.db'}"
    plan = _plan("sqlite", url).replace(
        '          - "DELETE FROM items WHERE id % 3 = 0"\n'
        "          - \"UPDATE items SET name = 'broken'\"\n",
        f"          - \"INSERT INTO items (id, name) VALUES ({ROWS + 1}, 'new')\"\n",
    )
    (tm.cwd / "p.yaml").write_text(plan)
    proc = tm("run", "p.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no data lost" in proc.stdout


def test_verify_backup_step_passes_on_postgres(tm: Tm, pg_url: str) -> None:
    plan = _plan("postgres", pg_url).replace(
        '          - "DELETE FROM items WHERE id % 3 = 0"\n'
        "          - \"UPDATE items SET name = 'broken'\"\n",
        '          - "SELECT 1"\n',
    )
    plan = plan.replace(
        "    verify:\n", "      - {kind: verify_backup, from: db_backup}\n    verify:\n", 1
    )
    (tm.cwd / "p.yaml").write_text(plan)
    proc = tm("run", "p.yaml", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{ROWS} rows" in proc.stdout or "1 tables" in proc.stdout


def test_preflight_names_the_missing_tool_and_runs_nothing(tm: Tm, pg_url: str) -> None:
    (tm.cwd / "p.yaml").write_text(_plan("postgres", pg_url))
    empty = tm.cwd / "empty-bin"
    empty.mkdir()
    proc = tm("run", "p.yaml", env={"PATH": str(empty)})
    assert proc.returncode == 2
    assert "postgresql-client" in proc.stderr and "nothing was run" in proc.stderr
    engine = create_engine(engine_url("postgres", pg_url))
    with engine.connect() as conn:
        tables = conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename = 'items'"))
        assert tables.scalar() == 0, "nothing ran"
    engine.dispose()


def test_backups_cli_list_verify_prune(tm: Tm) -> None:
    url = f"sqlite:///{tm.cwd / 'app.db'}"
    (tm.cwd / "app.db").touch()
    plan = f"""
name: bk
environment: test
targets:
  databases:
    app: {{kind: sqlite, url: "{url}"}}
phases:
  - name: one
    steps:
      - {{kind: sql, database: app, statements: "CREATE TABLE IF NOT EXISTS t (id INTEGER)"}}
      - {{kind: sql, database: app, statements: "INSERT INTO t VALUES (1)"}}
      - {{kind: backup, id: b, database: app}}
"""
    (tm.cwd / "p.yaml").write_text(plan)
    for _ in range(3):
        assert tm("run", "p.yaml").returncode == 0
    rows = tm.json("backups", "list")
    assert len(rows) == 3 and all(r["kind"] == "sqlite" and r["tables"] == 1 for r in rows)
    assert [r["rows"] for r in rows] == [1, 2, 3]
    first = rows[0]["id"]
    assert tm("backups", "verify", first).returncode == 0
    db_file = next(
        p for p in (tm.cwd / ".tminus" / "backups" / first).iterdir() if p.name != "manifest.json"
    )
    data = bytearray(db_file.read_bytes())
    data[-1] ^= 0xFF
    db_file.write_bytes(bytes(data))
    bad = tm("backups", "verify", first)
    assert bad.returncode == 1 and "DAMAGED" in bad.stderr
    pruned = tm("backups", "prune", "--keep", "1")
    assert pruned.returncode == 0 and "2 backup(s) deleted" in pruned.stdout
    assert [r["id"] for r in tm.json("backups", "list")] == [rows[2]["id"]]


def test_backups_in_use_by_a_paused_deploy_are_kept(tm: Tm) -> None:
    url = f"sqlite:///{tm.cwd / 'app.db'}"
    plan = f"""
name: bk
environment: test
targets:
  databases:
    app: {{kind: sqlite, url: "{url}"}}
phases:
  - name: one
    on_failure: pause
    steps:
      - {{kind: sql, database: app, statements: "CREATE TABLE IF NOT EXISTS t (id INTEGER)"}}
      - {{kind: sql, database: app, statements: "INSERT INTO t VALUES (1)"}}
      - {{kind: backup, id: b, database: app}}
      - {{kind: run, name: gate, command: "test ! -f stop"}}
"""
    (tm.cwd / "p.yaml").write_text(plan)
    (tm.cwd / "stop").touch()
    assert tm("run", "p.yaml").returncode == 3  # paused, holding its backup
    (tm.cwd / "stop").unlink()
    assert tm("run", "p.yaml", "--force-unlock").returncode == 0
    rows = tm.json("backups", "list")
    assert rows[0]["in_use_by"] == ["bk-1"] and rows[1]["in_use_by"] == []
    out = tm("backups", "prune", "--keep", "1")
    assert "in use by bk-1" in out.stdout
    assert len(tm.json("backups", "list")) == 2


def test_migration_failing_half_way_restores_identical_data(
    tm: Tm, database: tuple[str, str]
) -> None:
    """Seed 004's database rollback: numbered up/down migrations; the second fails half-way
    (after changing data), so the deploy restores the backup and the data is as before."""
    kind, url = database
    migrations = tm.cwd / "migrations"
    migrations.mkdir()
    (migrations / "000001_rename.up.sql").write_text("UPDATE items SET name = 'renamed';\n")
    (migrations / "000001_rename.down.sql").write_text("SELECT 1;\n")
    (migrations / "000002_half.up.sql").write_text(
        "DELETE FROM items WHERE id > 100;\nTHIS IS NOT SQL;\n"
    )
    (migrations / "000002_half.down.sql").write_text("SELECT 1;\n")
    seed = "\n".join(f'          - "{s}"' for s in _seed_sql())
    (tm.cwd / "p.yaml").write_text(f"""
name: halfway
environment: test
targets:
  databases:
    app: {{kind: {kind}, url: "{url}"}}
phases:
  - name: seed
    steps:
      - kind: sql
        database: app
        statements:
{seed}
  - name: migrate
    steps:
      - {{kind: backup, id: db_backup, database: app}}
      - kind: migrate
        database: app
        tool: sql_dir
        dir: migrations
        on_rollback: restore
        backup: db_backup
""")
    proc = tm("run", "p.yaml", timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert tm.latest()["state"] == "rolled_back"
    assert _rows(kind, url) == EXPECTED
