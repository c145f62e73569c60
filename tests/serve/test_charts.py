"""What the deploy page draws from a deploy's events (:mod:`tminus.serve.charts`), on a real
SQLite store: the watch's downsampling keeps every spike and every status change, and the
drawing kept for a deploy is drawn again whenever its events changed, including a late commit
of a lower sequence number (PostgreSQL hands numbers out before commit).

Mutations tried (each makes a test here fail, then restored):
- ``downsample`` keeps only each run's first measurement (no lowest/highest):
  ``test_downsampling_keeps_every_spike_and_status_change`` fails (the spike is gone);
- the mark is the newest sequence number alone (``event_mark`` returns ``(0, newest)``):
  ``test_a_late_lower_numbered_event_is_drawn`` fails (the kept drawing is served);
- ``series`` never compares marks (a kept drawing is always served):
  ``test_the_drawing_is_kept_until_an_event_comes`` fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from tests.conftest import new_deploy
from tminus.clock import now
from tminus.serve import charts
from tminus.store import schema as t
from tminus.store.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'state.db'}")


def _measure(store: Store, deploy: str, n: int, value: float, status: str = "ok") -> None:
    data = {"check": "latency", "status": status, "value": value, "at": now().isoformat()}
    store.event(deploy, "watch.measurement", message=f"watch #{n}", data=data)


def test_downsampling_keeps_every_spike_and_status_change() -> None:
    measured: list[dict[str, Any]] = [
        {"type": "watch.measurement", "data": {"check": "c", "status": "ok", "value": 10.0}}
        for _ in range(6000)
    ]
    measured[4321]["data"] = {"check": "c", "status": "ok", "value": 999.0}  # a spike
    measured[777]["data"] = {"check": "c", "status": "ok", "value": -5.0}  # a dip
    measured[5000]["data"] = {"check": "c", "status": "critical", "value": 10.0}
    measured[5001]["data"] = {"check": "c", "status": "failed", "value": None}
    kept = charts.downsample(measured, charts.MAX_POINTS)
    assert len(kept) <= charts.MAX_POINTS * 1.5, len(kept)
    values = [e["data"]["value"] for e in kept]
    assert 999.0 in values and -5.0 in values
    statuses = {e["data"]["status"] for e in kept}
    assert {"critical", "failed"} <= statuses
    # in their order
    where = {id(e): i for i, e in enumerate(measured)}
    positions = [where[id(e)] for e in kept]
    assert positions == sorted(positions)


def test_the_drawing_is_kept_until_an_event_comes(store: Store) -> None:
    deploy = new_deploy(store)
    for n in range(50):
        _measure(store, deploy, n, float(n))
    first = charts.series(store, deploy, None)
    assert charts.series(store, deploy, None) is first  # kept: nothing changed
    _measure(store, deploy, 50, 500.0, "critical")
    again = charts.series(store, deploy, None)
    assert again is not first
    (check,) = again.watch
    assert check["total"] == 51 and "critical: 1" in check["counts"]


def test_a_late_lower_numbered_event_is_drawn(store: Store) -> None:
    """Two writers took sequence numbers N and N+1; N+1 committed first and was drawn, then N
    commits: the newest number is unchanged, the count is not."""
    deploy = new_deploy(store)
    for n in range(3):
        _measure(store, deploy, n, 1.0)
    with store.tx() as conn:
        newest = conn.execute(select(t.events.c.seq).order_by(t.events.c.seq.desc())).first()
    assert newest is not None
    late = newest[0] + 1

    def row(seq: int, value: float, status: str) -> dict[str, Any]:
        return {
            "seq": seq,
            "deploy_id": deploy,
            "ts": now(),
            "type": "watch.measurement",
            "message": "watch",
            "data": {"check": "latency", "status": status, "value": value},
        }

    with store.tx() as conn:
        conn.execute(insert(t.events), [row(late + 1, 2.0, "ok")])
    before = charts.series(store, deploy, None)
    assert before.watch[0]["total"] == 4
    with store.tx() as conn:
        conn.execute(insert(t.events), [row(late, 900.0, "critical")])
    after = charts.series(store, deploy, None)
    assert after.watch[0]["total"] == 5 and "critical: 1" in after.watch[0]["counts"]


def test_weights_points_and_routing_come_from_their_events(store: Store) -> None:
    deploy = new_deploy(store)
    store.event(deploy, "canary.weight", message="w", data={"weight": 5})
    store.event(deploy, "analysis.measurement", message="m", data={"check": "e", "value": 0.1})
    store.event(deploy, "traffic.set", message="t", data={"weights": {"blue": 90, "green": 10}})
    store.event(deploy, "step.started", message="s", data={})
    drawn = charts.series(store, deploy, None)
    assert [w["weight"] for w in drawn.weights] == [5]
    assert drawn.points == [{"check": "e", "value": 0.1}]
    assert [e["type"] for e in drawn.routing] == ["traffic.set"]
    assert drawn.watch == []
