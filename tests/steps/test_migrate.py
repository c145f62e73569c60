"""``kind: migrate`` on real PostgreSQL and SQLite: the kind driven directly, and end to end
through the real CLI (exit 0 done, 1 failed and rolled back, 3 paused)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tminus.engine.engine import step_from_spec, step_spec
from tminus.plan.interpolate import Resolver
from tminus.plan.loader import load_plan_text
from tminus.plan.steps import MigrateStep, RestoreStep
from tminus.steps.base import StepContext, StepOutcome
from tminus.steps.migrate import KIND, SqlDir, record_path, split_sql
from tminus.steps.registry import get_kind
from tminus.store.store import Store

PG_ADMIN = os.environ.get("TMINUS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


# --- databases -------------------------------------------------------------------------------
@pytest.fixture
def pg() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards. No PostgreSQL: the test fails."""
    name = f"tminus_m_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN} (start it for these tests): {exc}")
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["postgres", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(kind, url) of an empty database of each kind."""
    if request.param == "postgres":
        return "postgres", str(request.getfixturevalue("pg"))
    return "sqlite", f"sqlite:///{tmp_path / 'app.db'}"


def query(kind: str, url: str, sql: str) -> list[tuple[Any, ...]]:
    if kind == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [tuple(r) for r in conn.execute(sql)]
    with psycopg.connect(url, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(sql)]


def execute(kind: str, url: str, sql: str) -> None:
    if kind == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executescript(sql)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


def tables(kind: str, url: str) -> set[str]:
    sql = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if kind == "sqlite"
        else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    return {r[0] for r in query(kind, url, sql)}


def version_row(kind: str, url: str) -> list[tuple[int, bool]]:
    return [
        (int(v), bool(d))
        for v, d in query(kind, url, "SELECT version, dirty FROM schema_migrations")
    ]


# --- fixtures on disk ------------------------------------------------------------------------
def write_migrations(d: Path, broken: int | None = None) -> Path:
    """001 a, 002 b, 003 c; ``broken``: that version's up file fails after a good statement."""
    d.mkdir(parents=True, exist_ok=True)
    for v, name in ((1, "a"), (2, "b"), (3, "c")):
        up = f"-- {name}; with a semicolon in a comment\nCREATE TABLE t_{name} (x text);\n"
        up += f"INSERT INTO t_{name} VALUES ('50% done; really');\n"
        if v == broken:
            up += "CREATE TABLE broken (x nosuchtype nosuchthing(;\n"
        (d / f"{v:03d}_create_{name}.up.sql").write_text(up)
        (d / f"{v:03d}_create_{name}.down.sql").write_text(f"DROP TABLE t_{name};\n")
    return d


ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/alembic
sqlalchemy.url = driver://set-by-tminus

[loggers]
keys = root,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %%(levelname)-5.5s [%%(name)s] %%(message)s
"""

ENV_PY = """\
from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

connectable = engine_from_config(
    config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
    poolclass=pool.NullPool,
)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

REVISION = """\
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE TABLE {table} (id integer)")


def downgrade():
    op.execute("DROP TABLE {table}")
"""


def write_alembic(d: Path) -> Path:
    """A tiny alembic project: r1 creates t1, r2 creates t2."""
    (d / "alembic" / "versions").mkdir(parents=True)
    (d / "alembic.ini").write_text(ALEMBIC_INI)
    (d / "alembic" / "env.py").write_text(ENV_PY)
    (d / "alembic" / "script.py.mako").write_text("")
    for rev, down, table in (("r1", None, "t1"), ("r2", "r1", "t2")):
        text = REVISION.format(rev=rev, down=down, table=table)
        (d / "alembic" / "versions" / f"{rev}.py").write_text(text)
    return d / "alembic.ini"


# --- driving the kind directly ---------------------------------------------------------------
def plan_text(kind: str, url: str, steps: str, on_failure: str = "rollback") -> str:
    return textwrap.dedent(
        """\
        name: mig
        environment: test
        targets:
          databases:
            app: {{kind: {kind}, url: "{url}"}}
        phases:
          - name: schema
            on_failure: {on_failure}
            steps:
        """
    ).format(kind=kind, url=url, on_failure=on_failure) + textwrap.indent(
        textwrap.dedent(steps), "      "
    )


class Kit:
    """A plan, its resolver and contexts for steps of one deploy, with the lines logged."""

    def __init__(self, tmp_path: Path, kind: str, url: str, steps: str) -> None:
        result = load_plan_text(plan_text(kind, url, steps))
        assert result.plan is not None, result.problems
        self.plan = result.plan
        self.state_dir = tmp_path / ".tminus"
        self.resolver = Resolver.for_plan(
            self.plan.variables,
            self.plan.secrets,
            base_dir=tmp_path,
            builtins={"deploy_id": "mig-1", "state_dir": str(self.state_dir)},
        )
        self.lines: list[str] = []

    def step(self, i: int) -> MigrateStep:
        s = self.plan.phases[0].steps[i]
        assert isinstance(s, MigrateStep)
        return s

    def ctx(self, key: str) -> StepContext:
        return StepContext(
            deploy_id="mig-1",
            plan=self.plan,
            resolver=self.resolver,
            key=key,
            phase=0,
            state_dir=self.state_dir,
            log=self.lines.append,
            emit=lambda etype, msg, data: None,
            approvals_for=lambda gate: [],
        )

    def run(self, i: int) -> StepOutcome:
        return asyncio.run(KIND.execute(self.step(i), self.ctx(f"phase/0/step/{i}")))

    def undo(self, i: int, n: int = 0) -> StepOutcome:
        """The built-in compensation of step ``i``, through its stored form, as rollback/n."""
        comp = KIND.compensation(self.step(i), self.ctx(f"phase/0/step/{i}"))
        assert comp is not None and comp.partial_ok
        down = step_from_spec(json.loads(json.dumps(step_spec(comp.step))))
        assert isinstance(down, MigrateStep) and down.idempotent and down.id is None
        assert KIND.compensation(down, self.ctx(f"rollback/{n}")) is None, "no undo of an undo"
        return asyncio.run(KIND.execute(down, self.ctx(f"rollback/{n}")))


def test_registered() -> None:
    assert get_kind("migrate") is KIND


def test_sql_dir_up_to_then_rollback_down(tmp_path: Path, db: tuple[str, str]) -> None:
    kind, url = db
    migs = write_migrations(tmp_path / "migs")
    kit = Kit(
        tmp_path,
        kind,
        url,
        f"""\
        - {{kind: migrate, database: app, tool: sql_dir, dir: "{migs}", to: 1}}
        - {{kind: migrate, database: app, tool: sql_dir, dir: "{migs}"}}
        """,
    )
    first = kit.run(0)
    assert first.ok, first.error
    assert first.artifacts["before"] is None and first.artifacts["after"] == 1
    assert version_row(kind, url) == [(1, False)]
    assert tables(kind, url) == {"schema_migrations", "t_a"}

    second = kit.run(1)
    assert second.ok, second.error
    assert (second.artifacts["before"], second.artifacts["after"]) == (1, 3)
    assert version_row(kind, url) == [(3, False)]
    assert tables(kind, url) == {"schema_migrations", "t_a", "t_b", "t_c"}
    assert query(kind, url, "SELECT x FROM t_c") == [("50% done; really",)]
    assert [x for x in kit.lines if x.startswith("applying")] == [
        "applying 001_create_a.up.sql",
        "applying 002_create_b.up.sql",
        "applying 003_create_c.up.sql",
    ]

    down = kit.undo(1)
    assert down.ok, down.error
    assert down.artifacts["after"] == 1
    assert version_row(kind, url) == [(1, False)]
    assert tables(kind, url) == {"schema_migrations", "t_a"}, "objects of 002 and 003 are gone"

    kit.lines.clear()
    again = kit.undo(1, n=1)
    assert again.ok, again.error
    assert any("already at version 1" in x for x in kit.lines)
    assert not any(x.startswith("reverting") for x in kit.lines)
    assert version_row(kind, url) == [(1, False)]

    to_nothing = kit.undo(0, n=2)  # back to before the first step: no version at all
    assert to_nothing.ok, to_nothing.error
    assert version_row(kind, url) == []
    assert tables(kind, url) == {"schema_migrations"}


def test_sql_dir_to_below_current_goes_down_and_undo_goes_back_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migs = write_migrations(tmp_path / "migs")
    kit = Kit(
        tmp_path,
        "sqlite",
        url,
        f"""\
        - {{kind: migrate, database: app, tool: sql_dir, dir: "{migs}"}}
        - {{kind: migrate, database: app, tool: sql_dir, dir: "{migs}", to: 1}}
        - {{kind: migrate, database: app, tool: sql_dir, dir: "{migs}", to: 0}}
        - {{kind: migrate, database: app, tool: sql_dir, dir: "{migs}", to: 9}}
        """,
    )
    assert kit.run(0).ok
    down = kit.run(1)  # like golang-migrate's goto: to: below the current version goes down
    assert down.ok, down.error
    assert (down.artifacts["before"], down.artifacts["after"]) == (3, 1)
    assert tables("sqlite", url) == {"schema_migrations", "t_a"}
    nothing = kit.run(2)  # to: 0 (no such file): nothing applied
    assert nothing.ok, nothing.error
    assert version_row("sqlite", url) == [] and tables("sqlite", url) == {"schema_migrations"}
    bad = kit.run(3)
    assert not bad.ok and bad.error == f"to: 9 is not a migration version in {migs}"
    assert kit.undo(2).ok and version_row("sqlite", url) == [(1, False)]
    assert kit.undo(1, n=1).ok and version_row("sqlite", url) == [(3, False)]
    assert tables("sqlite", url) == {"schema_migrations", "t_a", "t_b", "t_c"}


def test_sql_dir_failing_file_leaves_dirty_and_stops(tmp_path: Path, db: tuple[str, str]) -> None:
    kind, url = db
    migs = write_migrations(tmp_path / "migs", broken=2)
    kit = Kit(
        tmp_path, kind, url, f'- {{kind: migrate, database: app, tool: sql_dir, dir: "{migs}"}}'
    )
    out = kit.run(0)
    assert not out.ok and out.error is not None
    assert "002_create_b.up.sql failed" in out.error and "dirty at version 2" in out.error
    assert version_row(kind, url) == [(2, True)]
    assert tables(kind, url) == {"schema_migrations", "t_a"}, "002 ran in one transaction"
    assert out.artifacts["before"] is None

    again = kit.run(0)  # a retry never continues over a dirty table
    assert not again.ok and again.error is not None
    assert "is dirty at version 2" in again.error and "force the version" in again.error
    assert "Inspect the database" in again.error
    assert version_row(kind, url) == [(2, True)]

    refused = kit.undo(0)  # the rollback refuses too: it must not report a clean undo
    assert not refused.ok and refused.error is not None and "dirty" in refused.error

    # The operator repairs and forces the version; now the undo returns to nothing.
    execute(kind, url, "UPDATE schema_migrations SET version = 1, dirty = false")
    down = kit.undo(0, n=1)
    assert down.ok, down.error
    assert version_row(kind, url) == [] and tables(kind, url) == {"schema_migrations"}


def test_sql_dir_dirty_at_start_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migs = write_migrations(tmp_path / "migs")
    execute(
        "sqlite",
        url,
        "CREATE TABLE schema_migrations (version bigint not null primary key, "
        "dirty boolean not null); INSERT INTO schema_migrations VALUES (1, 1);",
    )
    kit = Kit(
        tmp_path, "sqlite", url, f'- {{kind: migrate, database: app, tool: sql_dir, dir: "{migs}"}}'
    )
    out = kit.run(0)
    assert not out.ok and out.error is not None and "dirty at version 1" in out.error
    rec = json.loads(record_path(kit.state_dir, "mig-1", "phase/0/step/0").read_text())
    assert rec["known"] is False
    undo = kit.undo(0)
    assert undo.ok, undo.error
    assert any("never changed the database" in x for x in kit.lines)
    assert version_row("sqlite", url) == [(1, True)]


def test_sql_dir_retry_keeps_the_first_before_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    migs = write_migrations(tmp_path / "migs", broken=3)
    step = f'- {{kind: migrate, database: app, tool: sql_dir, dir: "{migs}"}}'
    kit = Kit(tmp_path, "sqlite", url, step)
    assert not kit.run(0).ok
    assert version_row("sqlite", url) == [(3, True)]
    execute("sqlite", url, "UPDATE schema_migrations SET version = 2, dirty = 0")
    (migs / "003_create_c.up.sql").write_text("CREATE TABLE t_c (x text);\n")
    retry = kit.run(0)
    assert retry.ok, retry.error
    assert (retry.artifacts["before"], retry.artifacts["after"]) == (None, 3)
    assert kit.undo(0).ok
    assert version_row("sqlite", url) == [] and tables("sqlite", url) == {"schema_migrations"}


def test_alembic_upgrade_then_down_to_before(tmp_path: Path, pg: str) -> None:
    ini = write_alembic(tmp_path)
    kit = Kit(
        tmp_path,
        "postgres",
        pg,
        f"""\
        - {{kind: migrate, database: app, tool: alembic, config: "{ini}", revision: r1}}
        - {{kind: migrate, database: app, tool: alembic, config: "{ini}"}}
        """,
    )
    first = kit.run(0)
    assert first.ok, first.error
    assert (first.artifacts["before"], first.artifacts["after"]) == (None, "r1")
    second = kit.run(1)
    assert second.ok, second.error
    assert (second.artifacts["before"], second.artifacts["after"]) == ("r1", "r2")
    assert any("Running upgrade r1 -> r2" in x for x in kit.lines), kit.lines
    assert query("postgres", pg, "SELECT version_num FROM alembic_version") == [("r2",)]

    down = kit.undo(1)
    assert down.ok, down.error
    assert query("postgres", pg, "SELECT version_num FROM alembic_version") == [("r1",)]
    assert tables("postgres", pg) == {"alembic_version", "t1"}
    kit.lines.clear()
    assert kit.undo(1, n=1).ok
    assert any("nothing to undo" in x for x in kit.lines)
    assert query("postgres", pg, "SELECT version_num FROM alembic_version") == [("r1",)]

    assert kit.undo(0, n=2).ok  # before r1 there was nothing: downgrade to base
    assert query("postgres", pg, "SELECT version_num FROM alembic_version") == []
    assert tables("postgres", pg) == {"alembic_version"}


def test_command_up_down_version(tmp_path: Path) -> None:
    ver, log = tmp_path / "ver.txt", tmp_path / "log.txt"
    ver.write_text("3\n")
    kit = Kit(
        tmp_path,
        "sqlite",
        f"sqlite:///{tmp_path / 'app.db'}",
        f"""\
        - kind: migrate
          database: app
          tool: command
          up: echo "up $TMINUS_DATABASE_URL" >> {log} && echo 5 > {ver}
          down: echo "down to $TMINUS_VERSION" >> {log} && echo "$TMINUS_VERSION" > {ver}
          version: cat {ver}
        """,
    )
    up = kit.run(0)
    assert up.ok, up.error
    assert (up.artifacts["before"], up.artifacts["after"]) == ("3", "5")
    assert log.read_text() == f"up sqlite:///{tmp_path / 'app.db'}\n"
    assert kit.undo(0).ok
    assert ver.read_text().strip() == "3"
    assert kit.undo(0, n=1).ok  # at the version already: down does not run again
    assert log.read_text().splitlines()[1:] == ["down to 3"]


def test_compensation_restore_none_and_describe(tmp_path: Path) -> None:
    kit = Kit(
        tmp_path,
        "sqlite",
        "sqlite:///app.db",
        """\
        - kind: migrate
          database: app
          tool: alembic
          config: alembic.ini
          on_rollback: restore
          backup: pre
        - {kind: migrate, database: app, tool: sql_dir, dir: migs, on_rollback: none, to: 7}
        - {kind: migrate, database: app, tool: command, up: ./migrate up}
        """,
    )
    comp = KIND.compensation(kit.step(0), kit.ctx("phase/0/step/0"))
    assert comp is not None and isinstance(comp.step, RestoreStep)
    spec = step_spec(comp.step)
    assert (spec["kind"], spec["from"], spec["database"]) == ("restore", "pre", "app")
    assert KIND.compensation(kit.step(1), kit.ctx("phase/0/step/1")) is None
    r = kit.resolver
    assert KIND.describe(kit.step(0), r) == (
        "Migrate app with alembic upgrade head (config alembic.ini); "
        "on rollback: restore backup pre"
    )
    assert KIND.describe(kit.step(1), r) == (
        "Migrate app with SQL files in migs up to version 7; on rollback: none"
    )
    assert KIND.describe(kit.step(2), r) == (
        "Migrate app with ./migrate up; on rollback: migrate down"
    )
    down = KIND.compensation(kit.step(2), kit.ctx("phase/0/step/2"))
    assert down is not None and isinstance(down.step, MigrateStep)
    assert KIND.describe(down.step, r) == (
        "Migrate app back down to the version recorded before phase/0/step/2 (no down command)"
    )
    lost = asyncio.run(KIND.execute(down.step, kit.ctx("rollback/0")))
    assert not lost.ok and lost.error is not None
    assert "no before-version was recorded for step phase/0/step/2" in lost.error


def test_split_sql() -> None:
    trigger = (
        "CREATE TABLE t (x int);\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = 1; END;\n"
        "-- just a comment;\n"
        "INSERT INTO t VALUES (';')"
    )
    assert len(split_sql(trigger, "sqlite")) == 3
    mysql = "INSERT INTO t VALUES ('a;b', \"c;d\", 'e\\';f'); # c;\n/* x; */ SELECT `a;b` FROM t;"
    assert split_sql(mysql, "mysql") == [
        "INSERT INTO t VALUES ('a;b', \"c;d\", 'e\\';f')",
        "# c;\n/* x; */ SELECT `a;b` FROM t",
    ]
    assert split_sql("CREATE FUNCTION f() AS $body$ a; b $body$; SELECT 1", "other") == [
        "CREATE FUNCTION f() AS $body$ a; b $body$",
        "SELECT 1",
    ]


# --- end to end through the CLI --------------------------------------------------------------
def tminus(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMINUS_OPERATOR": "alice"}
    env.pop("TMINUS_STATE", None)
    return subprocess.run(
        [sys.executable, "-m", "tminus", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def artifacts(cwd: Path, deploy: str) -> dict[str, dict[str, Any]]:
    store = Store(f"sqlite:///{cwd}/.tminus/state.db")
    try:
        return store.artifacts_by_step_id(deploy)
    finally:
        store.close()


def write_plan(cwd: Path, name: str, kind: str, url: str, steps: str, on_failure: str) -> str:
    text = plan_text(kind, url, steps, on_failure).replace("name: mig", f"name: {name}", 1)
    (cwd / f"{name}.yaml").write_text(text)
    return f"{name}.yaml"


def test_cli_alembic_rollback_downgrades_to_before(tmp_path: Path, pg: str) -> None:
    ini = write_alembic(tmp_path)
    execute(
        "postgres",
        pg,
        "CREATE TABLE t1 (id integer); CREATE TABLE alembic_version "
        "(version_num varchar(32) primary key); INSERT INTO alembic_version VALUES ('r1')",
    )
    steps = f"""\
    - {{id: m, kind: migrate, database: app, tool: alembic, config: "{ini}"}}
    - {{kind: run, command: "exit 1"}}
    """
    plan = write_plan(tmp_path, "alem", "postgres", pg, steps, "rollback")
    proc = tminus(tmp_path, "run", plan)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Running downgrade r2 -> r1" in proc.stdout, proc.stdout
    assert query("postgres", pg, "SELECT version_num FROM alembic_version") == [("r1",)]
    assert tables("postgres", pg) == {"alembic_version", "t1"}
    arts = artifacts(tmp_path, "alem-1")["m"]
    assert (arts["before"], arts["after"]) == ("r1", "r2")


def test_cli_sql_dir_failure_pauses_dirty(tmp_path: Path, db: tuple[str, str]) -> None:
    kind, url = db
    write_migrations(tmp_path / "migs", broken=2)
    steps = "- {id: m, kind: migrate, database: app, tool: sql_dir, dir: migs}\n"
    plan = write_plan(tmp_path, "paused", kind, url, steps, "pause")
    proc = tminus(tmp_path, "run", plan)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "dirty at version 2" in proc.stdout + proc.stderr
    assert version_row(kind, url) == [(2, True)]
    assert tables(kind, url) == {"schema_migrations", "t_a"}


def test_cli_sql_dir_rollback_to_recorded_before(tmp_path: Path, db: tuple[str, str]) -> None:
    kind, url = db
    SqlDir(kind, url, write_migrations(tmp_path / "migs"), lambda line: None).apply_up(1)
    assert version_row(kind, url) == [(1, False)]

    steps = """\
    - {id: m, kind: migrate, database: app, tool: sql_dir, dir: migs}
    - {kind: run, command: "exit 1"}
    """
    proc = tminus(tmp_path, "run", write_plan(tmp_path, "second", kind, url, steps, "rollback"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "returning to version 1" in proc.stdout
    assert "reverting 003_create_c.down.sql" in proc.stdout
    assert version_row(kind, url) == [(1, False)]
    assert tables(kind, url) == {"schema_migrations", "t_a"}
    arts = artifacts(tmp_path, "second-1")["m"]
    assert (arts["before"], arts["after"]) == (1, 3)


def test_cli_command_rollback(tmp_path: Path) -> None:
    (tmp_path / "ver.txt").write_text("3\n")
    steps = """\
    - kind: migrate
      database: app
      tool: command
      up: echo up >> log.txt && echo 4 > ver.txt
      down: echo "down $TMINUS_VERSION" >> log.txt && echo "$TMINUS_VERSION" > ver.txt
      version: cat ver.txt
    - {kind: run, command: "exit 1"}
    """
    plan = write_plan(tmp_path, "cmd", "sqlite", "sqlite:///app.db", steps, "rollback")
    proc = tminus(tmp_path, "run", plan)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (tmp_path / "log.txt").read_text().splitlines() == ["up", "down 3"]
    assert (tmp_path / "ver.txt").read_text().strip() == "3"
