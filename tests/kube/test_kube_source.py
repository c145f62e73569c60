"""The ``kubernetes`` check source through ``tminus health`` (the judge every source shares:
expect, WARN, CRITICAL), against the **stand-in** Kubernetes API server
(tminus.testing.kubeapi: no cluster can run here)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.conftest import Tm
from tests.kube.conftest import plan, step
from tminus.sources.kubernetes import restarts_since
from tminus.testing.kubeapi import KubeApi


def _health(tm: Tm, kube: KubeApi, **checks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    data = {
        name: {"source": "kubernetes", "target": "k8s", "deployment": "api", **c}
        for name, c in checks.items()
    }
    path = plan(tm, [{"kind": "wait", "duration": "1s"}], checks=data, health=list(data))
    done = tm("health", str(path), "--output", "json")
    rows = json.loads(done.stdout)["checks"]
    return {r["name"]: {**r, "exit": done.returncode} for r in rows}


RESTARTS = {"metric": "pod_restarts", "expect": "< 3", "warn": ">= 1", "critical": ">= 3"}


def test_pod_restarts_go_warn_then_critical(tm: Tm, kube: KubeApi) -> None:
    """The restarts of the Deployment's pods: 0 passes, 1 is WARN (exit 0), 3 is CRITICAL
    (exit 1). Uses the stand-in API server (restart counts set by the test)."""
    assert _health(tm, kube, r=RESTARTS)["r"]["status"] == "PASS"
    kube.set_restarts("api", 1)
    row = _health(tm, kube, r=RESTARTS)["r"]
    assert (row["status"], row["value"], row["exit"]) == ("WARN", 1, 0)
    kube.set_restarts("api", 2, pod=1)
    row = _health(tm, kube, r=RESTARTS)["r"]
    assert (row["status"], row["value"], row["exit"]) == ("CRITICAL", 3, 1)
    assert row["message"] == "3 is CRITICAL (>= 3)"


def test_pod_restarts_since_the_rollout_count_only_the_new_pods(tm: Tm, kube: KubeApi) -> None:
    """`since: rollout` counts the pods of the newest ReplicaSet only: the old pods' restarts
    are gone with them after a rollout. Uses the stand-in API server."""
    kube.set_restarts("api", 5)
    since = {**RESTARTS, "since": "rollout"}
    assert _health(tm, kube, r=since)["r"]["value"] == 5
    done = tm("run", str(plan(tm, [step("set_image", containers={"api": "api:2"}, wait=True)])))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _health(tm, kube, r=since)["r"]["status"] == "PASS"
    kube.set_restarts("api", 1)
    assert _health(tm, kube, r=since)["r"]["status"] == "WARN"


def test_restarts_since_a_time_count_old_pods_by_their_last_termination() -> None:
    """Pods created since the time count whole; an older pod's container counts 1 when its
    last termination is since then (a lower bound), else 0."""
    now = datetime.now(UTC)

    def pod(created: datetime, restarts: int, ended: datetime | None) -> dict[str, Any]:
        st: dict[str, Any] = {"restartCount": restarts}
        if ended is not None:
            st["lastState"] = {"terminated": {"finishedAt": ended.isoformat()}}
        return {
            "metadata": {"creationTimestamp": created.isoformat()},
            "status": {"containerStatuses": [st]},
        }

    hour = timedelta(hours=1)
    pods = [pod(now, 4, now), pod(now - 3 * hour, 7, now), pod(now - 3 * hour, 9, now - 2 * hour)]
    assert restarts_since(pods, None) == 20
    assert restarts_since(pods, now - hour) == 4 + 1 + 0


def test_ready_replicas_and_available(tm: Tm, kube: KubeApi) -> None:
    """ready_replicas reads status.readyReplicas (2, WARN under 3); available is 1 once the
    rollout is complete and 0 while a stalled rollout waits, CRITICAL with the deadline's
    reason once it is exceeded. Uses the stand-in API server."""
    checks = {
        "ready": {"metric": "ready_replicas", "expect": ">= 1", "warn": "< 3"},
        "up": {"metric": "available", "expect": "== 1"},
    }
    rows = _health(tm, kube, **checks)
    assert (rows["ready"]["status"], rows["ready"]["value"]) == ("WARN", 2)
    assert (rows["up"]["status"], rows["up"]["value"]) == ("PASS", 1)
    kube.set_behaviour("api", stall=True)
    kube.set_progress_deadline("api", 7_200_000)  # 10 hours on the stand-in's scale
    done = tm("run", str(plan(tm, [step("set_image", containers={"api": "api:bad"})])))
    assert done.returncode == 0, done.stdout + done.stderr  # no wait: the patch is done
    up = _health(tm, kube, up=checks["up"])["up"]
    assert (up["status"], up["value"], up["exit"]) == ("CRITICAL", 0, 1)
    kube.set_progress_deadline("api", 1)  # 5 ms on the stand-in's scale: exceeded now
    up = _health(tm, kube, up=checks["up"])["up"]
    assert up["status"] == "CRITICAL" and up["exit"] == 1
    assert str(up["value"]).startswith("ProgressDeadlineExceeded: ReplicaSet")
    assert "has timed out progressing" in up["message"]


def test_a_missing_deployment_is_an_error_not_a_value(tm: Tm, kube: KubeApi) -> None:
    """A Deployment that does not exist: the source fails (CRITICAL, the API's 404 message),
    never a number. Uses the stand-in API server."""
    row = _health(tm, kube, r={**RESTARTS, "deployment": "nope"})["r"]
    assert row["status"] == "CRITICAL" and row["value"] is None
    assert 'deployments.apps "nope" not found' in row["message"]
