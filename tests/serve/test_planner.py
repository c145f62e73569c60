"""The timers a deploy gets (tminus.serve.planner) and the store's timer rows (claim, lease,
finish once). In-process, on a SQLite store in a temp dir.

Mutations tried: ``watch_due`` with ``n * p.every > p.for_`` changed to ``>=`` → the last
hourly measurement of the day is dropped (``test_watch_cadence...`` fails); ``add_timers``
inserting keys already planned → ``test_planning_twice...`` fails on the unique key;
``finish_timer`` without its lease check → ``test_a_lost_lease...`` fails.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.conftest import new_deploy
from tests.serve.test_serve import PLAN
from tminus import clock
from tminus.plan.loader import load_plan_text
from tminus.serve.planner import next_in_chain, plan_timers, watch_due
from tminus.store.store import Store

T0 = datetime(2027, 1, 10, 2, 0, tzinfo=UTC)


def _plan():  # type: ignore[no-untyped-def]
    result = load_plan_text(PLAN, "plan.yaml")
    assert result.plan is not None
    return result.plan


def test_watch_cadence_follows_the_schedule() -> None:
    plan = _plan()
    base = T0
    assert watch_due(plan, base, 0, 1) == base + timedelta(hours=1)
    assert watch_due(plan, base, 0, 24) == base + timedelta(hours=24)  # every 1h for 1d
    assert watch_due(plan, base, 0, 25) is None
    # the second period starts where the first ended: daily for days 2-7
    assert watch_due(plan, base, 1, 1) == base + timedelta(days=2)
    assert watch_due(plan, base, 1, 6) == base + timedelta(days=7)
    assert watch_due(plan, base, 1, 7) is None


def test_a_late_chain_skips_what_was_missed_and_says_how_many() -> None:
    plan = _plan()
    timer = {"kind": "watch", "key": "watch:0:3", "data": {"period": 0, "n": 3}}
    nxt, skipped = next_in_chain(plan, timer, T0, T0, T0 + timedelta(hours=7, minutes=30))
    assert nxt is not None and nxt["key"] == "watch:0:8" and skipped == 4
    assert nxt["due_at"] == T0 + timedelta(hours=8)
    end, _ = next_in_chain(
        plan,
        {**timer, "key": "watch:0:24", "data": {"period": 0, "n": 24}},
        T0,
        T0,
        T0 + timedelta(hours=24),
    )
    assert end is None


def test_scheduled_deploy_gets_its_notices_and_a_run_deploy_does_not() -> None:
    plan = _plan()
    d = {"state": "scheduled", "created_at": T0 - timedelta(days=3)}
    scheduled = [{"type": "deploy.scheduled", "data": {"at": T0.isoformat()}}]
    keys = {s["key"]: s["due_at"] for s in plan_timers(plan, d, {}, scheduled)}
    assert keys[f"notice:0:{T0.isoformat()}"] == T0 - timedelta(hours=48)
    assert keys[f"notice:2:{T0.isoformat()}"] == T0 - timedelta(hours=1)
    assert keys[f"window_start:3:{T0.isoformat()}"] == T0
    assert keys["during:4:1"] == T0 + timedelta(minutes=30)
    run = plan_timers(plan, {"state": "running", "created_at": T0}, {}, [])
    assert [s["key"] for s in run] == ["during:4:1"]


def test_planning_twice_inserts_nothing_more(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    d = new_deploy(store)
    spec = [{"key": "k1", "kind": "notice", "due_at": T0, "data": {"rule": 0}}]
    assert store.add_timers(d, spec) == 1
    assert store.add_timers(d, spec) == 0
    assert len(store.timers(d)) == 1


def test_a_lost_lease_records_nothing(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    d = new_deploy(store)
    store.add_timers(d, [{"key": "k1", "kind": "notice", "due_at": clock.now(), "data": {}}])
    mine = store.claim_timers("a", timedelta(seconds=20))
    assert [t["key"] for t in mine] == ["k1"]
    assert store.claim_timers("b", timedelta(seconds=20)) == []  # leased to a
    previous = clock.install(clock.OffsetClock(timedelta(seconds=30)))  # a's lease expires
    try:
        theirs = store.claim_timers("b", timedelta(seconds=20))
        assert [t["key"] for t in theirs] == ["k1"]
        assert not store.finish_timer(mine[0]["id"], "a", "done", "late", [("notify", "a", None)])
        assert store.finish_timer(theirs[0]["id"], "b", "done", "ok", [("notify", "b", None)])
    finally:
        clock.install(previous)
    assert [e["message"] for e in store.events(d, types=("notify",))] == ["b"]
    store.close()
