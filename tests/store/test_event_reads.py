"""The reads of a deploy's events that the dashboard's deploy page makes (issue #17), on SQLite
and PostgreSQL: the newest events for its log, and only the chart series beside them, so a
deploy with a long watch is not read whole for one page.

Mutations tried (each makes a test here fail):
- ``events_tail`` without ``rows.reverse()``: the log is newest first
  (``test_events_tail_is_the_newest_oldest_first``);
- ``events_tail`` ordered by ``seq`` ascending: it returns the oldest events;
- ``view`` taking the canary's weights from the tail of the log instead of its own read: the
  weights older than the last 200 events are lost (``test_deploy_page_reads_tail_and_series``);
- ``view`` reading the log's events after the deploy's state (as it did until session 12): an
  event written in between is not streamed and the page keeps the older state
  (``test_an_event_written_while_the_page_is_read_is_streamed``; in CI a deploy started from
  the dashboard stayed "scheduled" on its page for 60 s while it waited for an approval).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tminus.serve.auth import Caller
from tminus.serve.dashboard import view
from tminus.store.store import Store

PLAN = """\
name: tail
environment: prod
phases:
  - name: one
    steps:
      - kind: run
        command: "true"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path}/state.db")
    return Store(request.getfixturevalue("pg_url"))


def _deploy(store: Store) -> str:
    return store.create_deploy(
        plan_name="tail",
        environment="prod",
        plan_path="p.yaml",
        plan_text=PLAN,
        plan_hash="h",
        started_by="alice",
        overrides={},
    )


def test_events_tail_is_the_newest_oldest_first(store: Store) -> None:
    """The newest ``limit`` events of the deploy, in the order they happened; another deploy's
    events in between are not among them."""
    a, b = _deploy(store), _deploy(store)
    for i in range(30):
        store.event(a, "note", f"a{i}")
        store.event(b, "note", f"b{i}")
    tail = store.events_tail(a, 10)
    assert [e["message"] for e in tail] == [f"a{i}" for i in range(20, 30)]
    assert all(e["deploy_id"] == a for e in tail)
    seqs = [e["seq"] for e in tail]
    assert seqs == sorted(seqs)
    # fewer events than the limit: all of them, from deploy.created on
    whole = store.events_tail(b, 500)
    assert len(whole) == 31 and whole[0]["type"] == "deploy.created"
    assert store.events_tail("nope-1", 10) == []


def test_deploy_page_reads_tail_and_series(store: Store) -> None:
    """A deploy with more events than the page's log: the log is the newest 200 and the
    page's last sequence number the newest event's, while the canary's weights and analysis
    measurements come from every event of theirs, the oldest too."""
    d = _deploy(store)
    for w in (5, 25, 50):
        store.event(d, "canary.weight", f"{w}%", data={"weight": w})
        store.event(d, "analysis.measurement", "ok", data={"metric": "errors", "value": w})
    for i in range(300):
        store.event(d, "note", f"n{i}")
    page = view(store, d, Caller("bob", "token", "127.0.0.1", "test"))
    assert [w["weight"] for w in page["weights"]] == [5, 25, 50]
    assert [m["value"] for m in page["measurements"]] == [5, 25, 50]
    assert len(page["events"]) == 200
    assert page["events"][-1]["message"] == "n299"
    assert page["events"][0]["message"] == "n100"
    assert page["last_seq"] == store.events(d)[-1]["seq"]


def test_an_event_written_while_the_page_is_read_is_streamed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker writes an event (the deploy reaching its approval gate) right after the page
    read the deploy's state: the page's stream starts before that event, so the page gets it
    and refreshes the state it shows."""
    import tminus.engine.status as status

    d = _deploy(store)
    real = status.deploy_status

    def state_then_event(*args: object, **kwargs: object) -> object:
        info = real(*args, **kwargs)  # type: ignore[arg-type]
        store.event(d, "gate.waiting", "waiting for approval")
        return info

    monkeypatch.setattr(status, "deploy_status", state_then_event)
    page = view(store, d, Caller("bob", "token", "127.0.0.1", "test"))
    streamed = store.events_after(d, page["last_seq"], 200)
    assert [e["type"] for e in streamed] == ["gate.waiting"]
    assert "gate.waiting" not in [e["type"] for e in page["events"]]  # not shown twice
