"""The state store: Alembic schema matches the models, locks, compensations, on SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tminus.errors import LockHeld, NotFound
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


def _deploy(store: Store, plan: str = "p") -> str:
    return store.create_deploy(
        plan_name=plan,
        environment="prod",
        plan_path="p.yaml",
        plan_text="name: p",
        plan_hash="h",
        started_by="alice",
        overrides={},
    )


def test_deploy_ids_are_sequential_per_plan(store: Store) -> None:
    assert [_deploy(store), _deploy(store), _deploy(store, "q")] == ["p-1", "p-2", "q-1"]
    with pytest.raises(NotFound):
        store.deploy("p-9")


def test_lock_names_holder_and_force_takes_over(store: Store) -> None:
    a, b = _deploy(store), _deploy(store)
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
    d = _deploy(store)
    store.arm_compensation(
        d, phase=0, source_key="phase/0/step/0", title="undo", spec={"steps": []}, partial_ok=False
    )
    assert [c["state"] for c in store.compensations(d)] == ["armed"]
    store.step_started(d, "phase/0/step/0", title="s", kind="run", step_id=None, attempts=1)
    store.step_finished(d, "phase/0/step/0", state="succeeded", compensation={"state": "pending"})
    assert [c["state"] for c in store.compensations(d)] == ["pending"]
    # re-arming the same step (a retry) voids the earlier registration
    store.arm_compensation(
        d, phase=0, source_key="phase/0/step/0", title="undo", spec={"steps": []}, partial_ok=False
    )
    assert [c["state"] for c in store.compensations(d)] == ["void", "armed"]


def test_store_and_engine_agree_on_terminal_states() -> None:
    from tminus.engine.states import TERMINAL
    from tminus.store.store import TERMINAL_STATES

    assert {s.value for s in TERMINAL} == TERMINAL_STATES


def test_lock_of_an_ended_deploy_is_taken_over(store: Store) -> None:
    a, b = _deploy(store), _deploy(store)
    store.acquire_lock("p", "prod", a, "alice", None)
    store.set_deploy(a, state="rolled_back")  # it died before releasing
    taken = store.acquire_lock("p", "prod", b, "bob", None)
    assert taken is not None and taken["deploy_id"] == a
