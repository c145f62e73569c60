"""The state store: Alembic schema matches the models, locks, compensations, on SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tests.conftest import new_deploy
from tminus import faults
from tminus.clock import now
from tminus.errors import LockHeld, NotFound
from tminus.procfs import pid_token
from tminus.store.schema import metadata
from tminus.store.store import HEAD_REVISION, Store

MIGRATIONS = Path(__file__).resolve().parents[2] / "src" / "tminus" / "store" / "migrations"


def test_head_revision_is_pinned() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path}/state.db")
    return Store(request.getfixturevalue("pg_url"))


def test_migrated_schema_matches_models(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_deploy_ids_are_sequential_per_plan(store: Store) -> None:
    assert [new_deploy(store), new_deploy(store), new_deploy(store, "q")] == ["p-1", "p-2", "q-1"]
    with pytest.raises(NotFound):
        store.deploy("p-9")


def test_lock_names_holder_and_force_takes_over(store: Store) -> None:
    a, b = new_deploy(store), new_deploy(store)
    store.acquire_lock("p", "prod", a, "alice", "release 2.0")
    store.acquire_lock("p", "prod", a, "alice", None)  # re-entrant for its own deploy
    with pytest.raises(LockHeld) as exc:
        store.acquire_lock("p", "prod", b, "bob", None)
    assert "p-1" in str(exc.value) and "alice" in str(exc.value) and "release 2.0" in str(exc.value)
    store.acquire_lock("p", "staging", b, "bob", None)  # another environment is free
    taken = store.acquire_lock("p", "prod", b, "bob", "stale", force=True)
    assert taken is not None and taken["deploy_id"] == a
    assert [e["type"] for e in store.events(a)][-1] == "lock.lost"
    assert store.lock("p", "prod")["deploy_id"] == b  # type: ignore[index]
    store.release_lock("p", "prod", a)  # not the holder: no effect
    assert store.lock("p", "prod") is not None
    store.release_lock("p", "prod", b)
    assert store.lock("p", "prod") is None


def test_compensation_is_armed_then_settled_with_the_step(store: Store) -> None:
    d = new_deploy(store)
    store.arm_compensation(
        d, phase=0, source_key="phase/0/step/0", title="undo", spec={"steps": []}, partial_ok=False
    )
    assert [c["state"] for c in store.compensations(d)] == ["armed"]
    store.step_started(d, "phase/0/step/0", title="s", kind="run", step_id=None, attempts=1)
    store.step_finished(d, "phase/0/step/0", state="succeeded", compensation_state="pending")
    assert [c["state"] for c in store.compensations(d)] == ["pending"]
    # re-arming the same step (a retry) voids the earlier registration
    store.arm_compensation(
        d, phase=0, source_key="phase/0/step/0", title="undo", spec={"steps": []}, partial_ok=False
    )
    assert [c["state"] for c in store.compensations(d)] == ["void", "armed"]


def test_store_and_engine_agree_on_terminal_states() -> None:
    from tminus.states import TERMINAL
    from tminus.store.store import TERMINAL_STATES

    assert {s.value for s in TERMINAL} == TERMINAL_STATES


def test_lock_of_an_ended_deploy_is_taken_over(store: Store) -> None:
    a, b = new_deploy(store), new_deploy(store)
    store.acquire_lock("p", "prod", a, "alice", None)
    store.set_deploy(a, state="rolled_back")  # it died before releasing
    taken = store.acquire_lock("p", "prod", b, "bob", None)
    assert taken is not None and taken["deploy_id"] == a


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_store_at_0001_upgrades_to_head(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A store made by an earlier tminus (revision 0001) is upgraded on open: its deploys
    keep their rows, with no heartbeat and no runner token yet; the processes table exists."""
    from alembic import command
    from sqlalchemy import create_engine, text

    url = (
        f"sqlite:///{tmp_path}/state.db"
        if backend == "sqlite"
        else request.getfixturevalue("pg_url").replace("postgresql://", "postgresql+psycopg://")
    )
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(
            text(
                "INSERT INTO deploys (id, plan_name, environment, seq, plan_path, plan_text, "
                "plan_hash, state, started_by, host, runner_pid, created_at, updated_at, "
                "overrides) VALUES ('p-1', 'p', 'prod', 1, 'p.yaml', 'name: p', 'h', "
                "'running', 'alice', 'old-box', 42, :ts, :ts, '{}')"
            ),
            {"ts": now()},
        )
    engine.dispose()
    store = Store(url)
    try:
        d = store.deploy("p-1")
        assert d["state"] == "running" and d["heartbeat_at"] is None and d["runner_token"] is None
        assert store.processes("p-1") == []
        store.add_process("p-1", "phase/0/step/0", "localhost", 4242, "123")
        assert [p["pid"] for p in store.processes("p-1")] == [4242]
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            rev = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        assert diff == [] and rev == HEAD_REVISION
    finally:
        store.close()


def test_processes_are_forgotten_with_their_step(store: Store) -> None:
    """step_finished forgets the step's process groups in its own transaction; heartbeats and
    process records do not count as commits for TMINUS_CRASH_AFTER_COMMITS."""
    d = new_deploy(store)
    store.step_started(d, "phase/0/step/0", title="s", kind="run", step_id=None, attempts=1)
    commits = faults.counts()["commits"]
    store.add_process(d, "phase/0/step/0", "localhost", 100, "7")
    store.add_process(d, "phase/0/step/1", "db1", 200, "8")
    store.heartbeat(d)
    assert faults.counts()["commits"] == commits  # neither counts as a crash point
    assert store.deploy(d)["heartbeat_at"] is not None
    store.step_finished(d, "phase/0/step/0", state="succeeded")
    assert [(p["key"], p["host"], p["pid"]) for p in store.processes(d)] == [
        ("phase/0/step/1", "db1", 200)
    ]
    store.clear_processes(d)
    assert store.processes(d) == []
    import os

    store.set_deploy(d, runner_pid=os.getpid())  # the engine's call: the token follows
    assert store.deploy(d)["runner_token"] == pid_token(os.getpid())
    store.set_runner(d, pid=4242, host="box", token="99")
    row = store.deploy(d)
    assert (row["runner_pid"], row["host"], row["runner_token"]) == (4242, "box", "99")


def test_create_deploy_locked_leaves_nothing_when_the_lock_is_held(store: Store) -> None:
    """The deploy row and the lock in one transaction: a loser writes nothing and the error
    names the holder; with force, a live holder (per holder_check) is refused."""
    a, taken = store.create_deploy_locked(
        plan_name="p",
        environment="prod",
        plan_path="p.yaml",
        plan_text="name: p",
        plan_hash="h",
        started_by="alice",
        overrides={},
        reason="release 2.0",
    )
    assert (a, taken) == ("p-1", None)
    kwargs: dict[str, Any] = dict(
        plan_name="p",
        environment="prod",
        plan_path="p.yaml",
        plan_text="name: p",
        plan_hash="h",
        started_by="bob",
        overrides={},
    )
    with pytest.raises(LockHeld) as exc:
        store.create_deploy_locked(**kwargs)
    assert "p-1" in str(exc.value) and "alice" in str(exc.value) and "release 2.0" in str(exc.value)
    with pytest.raises(LockHeld) as exc:
        store.create_deploy_locked(**kwargs, force=True, holder_check=lambda d: "pid 1 alive")
    assert "--force-unlock refused" in str(exc.value) and "pid 1 alive" in str(exc.value)
    assert [d["id"] for d in store.list_deploys()] == ["p-1"]
    b, taken = store.create_deploy_locked(**kwargs, force=True, holder_check=lambda d: None)
    assert b == "p-2" and taken is not None and taken["deploy_id"] == "p-1"
    assert store.lock("p", "prod")["deploy_id"] == "p-2"  # type: ignore[index]
