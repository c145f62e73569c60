"""What a commit that does not wait for its flush (``Store.tx(flush=False)``, PostgreSQL's
``synchronous_commit = off`` for that transaction) keeps and what it may lose, on a private
PostgreSQL server crashed for real, its WAL writer frozen first (see tests/store/
_crashable_pg.py). The engine relies on two facts (docs/architecture.md, "What is durable
when"): such a commit is lost only if the database server crashes before the WAL writer
writes it, and the next flushed commit flushes it too (the WAL is written in order). A runner
killed right after it loses nothing: the crash campaign on a PostgreSQL store
(tests/engine/test_crash_campaign_pg.py) covers that.

Mutations tried:
- ``Store.tx`` ignores ``flush=False`` (``_NO_FLUSH`` never sent): the unflushed event
  survives the server crash and ``test_an_unflushed_commit_is_lost_in_a_server_crash`` fails
  (so the engine's unflushed records really skip the flush: the figures in bench/README.md
  are not from a no-op);
- every commit unflushed (``tx`` sends ``_NO_FLUSH`` whatever ``flush`` says):
  ``test_a_flushed_commit_flushes_the_unflushed_ones_before_it`` loses both events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import new_deploy
from tests.store._crashable_pg import crash, crashable_pg, freeze_wal_writer, fresh_db
from tminus.store.store import Store
from tminus.testing.pgreplica import PgPrimary


@pytest.fixture(scope="module")
def pg() -> Iterator[PgPrimary]:
    with crashable_pg() as server:
        yield server


def _types(url: str, deploy: str) -> list[str]:
    store = Store(url)
    try:
        return [e["type"] for e in store.events(deploy) if e["type"].startswith("test.")]
    finally:
        store.close()


def test_an_unflushed_commit_is_lost_in_a_server_crash(pg: PgPrimary) -> None:
    url = fresh_db(pg, f"s_{uuid.uuid4().hex[:8]}")
    store = Store(url)
    deploy = new_deploy(store)
    frozen = freeze_wal_writer(pg)
    with store.tx() as conn:
        store._event(conn, deploy, "test.flushed", None, None)
    with store.tx(flush=False) as conn:
        store._event(conn, deploy, "test.unflushed", None, None)
    # committed: another session sees it at once
    assert _types(url, deploy) == ["test.flushed", "test.unflushed"]
    store.close()
    crash(pg, frozen)
    assert _types(url, deploy) == ["test.flushed"]


def test_a_flushed_commit_flushes_the_unflushed_ones_before_it(pg: PgPrimary) -> None:
    url = fresh_db(pg, f"s_{uuid.uuid4().hex[:8]}")
    store = Store(url)
    deploy = new_deploy(store)
    frozen = freeze_wal_writer(pg)
    with store.tx(flush=False) as conn:
        store._event(conn, deploy, "test.unflushed", None, None)
    with store.tx() as conn:
        store._event(conn, deploy, "test.flushed", None, None)
    store.close()
    crash(pg, frozen)
    assert _types(url, deploy) == ["test.unflushed", "test.flushed"]
