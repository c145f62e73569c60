"""The records of every step (start, process group, end) go through the database driver
itself (tminus.store._driver), on real SQLite and PostgreSQL stores: the rows are the ones
SQLAlchemy writes, a failed transaction leaves nothing behind and the store usable, and a
PostgreSQL connection the server dropped is replaced.

Mutations tried (each fails a test here):
- no ROLLBACK on SQLite after an error inside the transaction (``driver_tx``'s except):
  the next record fails ("cannot start a transaction within a transaction");
- PostgreSQL's ``_after_error`` without its rollback: the next record fails (the connection
  is left in a failed transaction);
- PostgreSQL's ``_after_error`` without invalidating a broken connection: the
  dropped-connection test fails (the error does not say the connection was invalidated,
  and the store would keep the dead connection);
- PostgreSQL's driver left in autocommit after a record (no ``autocommit = False`` in
  ``driver_tx``'s finally): the store's own transactions are no longer whole;
- ``Prepared.compile`` ignoring a value written in the statement itself (``state="running"``,
  ``state == "armed"``): the restarted step and the settled compensation tests fail.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError, OperationalError

from tests.conftest import new_deploy
from tminus import faults
from tminus.clock import now
from tminus.errors import StoreError
from tminus.store import schema as t
from tminus.store.store import Store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path}/state.db")
    return Store(request.getfixturevalue("pg_url"))


def _raw(store: Store, table: str, deploy_id: str) -> list[dict[str, Any]]:
    """The deploy's rows as the driver reads them back (on SQLite: JSON and timestamps as
    the text stored), the deploy id and the timestamps' digits left out."""
    with store.engine.connect() as conn:
        p = "?" if store.engine.dialect.name == "sqlite" else "%s"
        res = conn.exec_driver_sql(
            f"SELECT * FROM {table} WHERE deploy_id = {p} ORDER BY 1", (deploy_id,)
        )
        rows = [dict(r._mapping) for r in res]
    for r in rows:
        r.pop("deploy_id")
        r.pop("seq", None)
        for k in ("ts", "started_at", "ended_at"):
            if isinstance(r.get(k), str):  # SQLite: the format, not the instant
                r[k] = re.sub(r"\d", "9", r[k])
            elif r.get(k) is not None:
                r[k] = type(r[k]), r[k].tzinfo is not None
    return rows


def test_driver_rows_equal_sqlalchemy_rows(store: Store) -> None:
    """A step written by the driver path and the same step written by SQLAlchemy Core
    (as the store wrote it before) are equal rows: the same timestamp text on SQLite, the
    same JSON (SQLAlchemy writes Python None in a JSON column as JSON null)."""
    ours, theirs = new_deploy(store), new_deploy(store)
    store.step_started(ours, "s", title="S", kind="run", step_id="x", attempts=1, new=True)
    store.step_finished(ours, "s", state="succeeded", output="o", artifacts={"exit_code": 0})
    ts = now()
    with store.engine.begin() as conn:
        conn.execute(
            insert(t.steps).values(
                deploy_id=theirs,
                key="s",
                title="S",
                kind="run",
                state="succeeded",
                attempts=1,
                started_at=ts,
                ended_at=ts,
                output="o",
                error=None,
                artifacts={"exit_code": 0},
                step_id="x",
            )
        )
        for etype, msg in (("step.started", "S"), ("step.succeeded", None)):
            conn.execute(
                insert(t.events).values(
                    deploy_id=theirs, ts=ts, type=etype, key="s", message=msg, data=None
                )
            )
    assert _raw(store, "steps", ours) == _raw(store, "steps", theirs)
    assert _raw(store, "events", ours) == _raw(store, "events", theirs)
    row = store.step_rows(ours)["s"]
    assert isinstance(row["started_at"], datetime) and row["started_at"].tzinfo is not None
    assert row["artifacts"] == {"exit_code": 0}


def test_a_restarted_step_and_its_settled_compensation(store: Store) -> None:
    """Values written in the statements themselves reach the driver: a step started again
    is ``running`` with its attempts, and only an *armed* compensation is settled."""
    d = new_deploy(store)
    store.arm_compensation(
        d, phase=0, source_key="s", title="undo", spec={"steps": []}, partial_ok=False
    )
    store.step_started(d, "s", title="S", kind="run", step_id=None, attempts=1, new=True)
    store.step_finished(d, "s", state="failed", error="boom", compensation_state="void")
    store.step_started(d, "s", title="S", kind="run", step_id=None, attempts=2)
    row = store.step_rows(d)["s"]
    assert (row["state"], row["attempts"], row["error"], row["ended_at"]) == (
        "running",
        2,
        None,
        None,
    )
    assert [c["state"] for c in store.compensations(d)] == ["void"]
    store.step_finished(d, "s", state="succeeded", compensation_state="pending")
    assert [c["state"] for c in store.compensations(d)] == ["void"]  # no longer armed


def test_a_failed_transaction_leaves_nothing_and_the_store_usable(store: Store) -> None:
    """An error in the middle of a step's end (its event cannot be written: the data is not
    JSON) rolls back the step's update and the process records' delete; the next records
    go through."""
    d = new_deploy(store)
    store.step_started(d, "s", title="S", kind="run", step_id=None, attempts=1, new=True)
    store.add_process(d, "s", "localhost", 4242, "7")
    with pytest.raises(TypeError):
        store.step_finished(d, "s", state="succeeded", event_data={"x": object()})
    assert store.step_rows(d)["s"]["state"] == "running"
    assert [p["pid"] for p in store.processes(d)] == [4242]
    store.step_finished(d, "s", state="succeeded")
    assert store.step_rows(d)["s"]["state"] == "succeeded"
    assert store.processes(d) == []


def test_a_database_error_is_sqlalchemys_and_rolled_back(store: Store) -> None:
    """A statement the database refuses (a second start of the same step as new: the
    primary key) is raised as SQLAlchemy's DBAPIError, as every other store call raises
    it, and leaves no event behind."""
    d = new_deploy(store)
    store.step_started(d, "s", title="S", kind="run", step_id=None, attempts=1, new=True)
    events = len(store.events(d))
    with pytest.raises(DBAPIError):
        store.step_started(d, "s", title="S", kind="run", step_id=None, attempts=1, new=True)
    assert len(store.events(d)) == events
    store.step_finished(d, "s", state="succeeded")
    assert store.step_rows(d)["s"]["state"] == "succeeded"


def test_a_dropped_postgres_connection_is_replaced(pg_url: str) -> None:
    """The server ends the store's connection (pg_terminate_backend, as a restart or an
    idle timeout would): the record in flight fails, the next one reconnects."""
    store = Store(pg_url)
    d = new_deploy(store)
    store.step_started(d, "a", title="A", kind="run", step_id=None, attempts=1, new=True)
    conn = store._connection()
    pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
    with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as c:
        c.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(DBAPIError) as info:
        store.step_finished(d, "a", state="succeeded")
    assert info.value.connection_invalidated
    store.step_finished(d, "a", state="succeeded")
    store.step_started(d, "b", title="B", kind="run", step_id=None, attempts=1, new=True)
    assert {k: r["state"] for k, r in store.step_rows(d).items()} == {
        "a": "succeeded",
        "b": "running",
    }
    with store.engine.connect() as c2:
        n = c2.execute(select(t.steps.c.key).where(t.steps.c.deploy_id == d)).all()
    assert len(n) == 2


def test_the_stores_own_transactions_stay_whole_after_a_driver_write(store: Store) -> None:
    """After a record through the driver (on PostgreSQL it switches the driver to
    autocommit for its one-query transaction), a transaction of the store's SQLAlchemy
    path that fails half-way still leaves nothing: the driver's mode was put back."""
    d = new_deploy(store)
    store.step_started(d, "s", title="S", kind="run", step_id=None, attempts=1, new=True)
    before = len(store.events(d))
    with pytest.raises(RuntimeError), store.tx() as conn:
        store._event(conn, d, "half.written", None, None)
        raise RuntimeError("half-way")
    assert len(store.events(d)) == before


def test_a_locked_sqlite_store_is_a_clear_store_error(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock past the busy timeout: the step's record
    fails with SQLAlchemy's OperationalError ("database is locked"), as every store call
    does, and goes through once the lock is released. Mutation: ``BEGIN IMMEDIATE`` sent
    before ``driver_tx``'s try (the first version): the raw ``sqlite3`` error escapes."""
    store = Store(f"sqlite:///{tmp_path}/state.db")
    d = new_deploy(store)
    conn = store._connection()
    conn.exec_driver_sql("PRAGMA busy_timeout=100")
    conn.commit()
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError, match="locked"):
            store.step_started(d, "s", title="S", kind="run", step_id=None, attempts=1, new=True)
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.step_started(d, "s", title="S", kind="run", step_id=None, attempts=1, new=True)
    assert store.step_rows(d)["s"]["state"] == "running"


def test_a_postgres_url_for_another_driver_is_refused_clearly() -> None:
    """The step records go through psycopg 3 itself, so a ``postgresql+psycopg2://`` (or
    any other driver's) URL is refused with a StoreError naming the driver and the URL to
    write, before SQLAlchemy tries to import that driver. Mutation: the check in
    ``_normalize`` removed: SQLAlchemy's ModuleNotFoundError (psycopg2 is not installed)
    escapes instead."""
    with pytest.raises(StoreError, match="psycopg2 driver") as info:
        Store("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    assert info.value.hint is not None and "postgresql://" in info.value.hint


def test_a_steps_start_and_end_are_fault_points_its_process_record_is_not(store: Store) -> None:
    """The crash campaign kills the runner after the n-th counted commit: a step's start and
    its end through the driver each count one, its process record none (as through
    ``Store.tx`` before). Mutations: ``driver_tx`` not calling ``_after_commit``: the count
    stays; ``add_process`` counted: the count is 3."""
    d = new_deploy(store)
    before = faults.counts()["commits"]
    store.step_started(d, "s", title="S", kind="run", step_id=None, attempts=1, new=True)
    store.add_process(d, "s", "localhost", 4242, "7")
    store.step_finished(d, "s", state="succeeded")
    assert faults.counts()["commits"] == before + 2
