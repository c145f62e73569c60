"""Seed 004 svetu-unified-attributes: phase 5's Kubernetes part — `kubectl set image
deployment/backend` and `kubectl rollout status deployment/backend` as the plan's two
`kubernetes` steps — rehearsed against the **stand-in** Kubernetes API server
(tminus.testing.kubeapi: no cluster can run here). The new image's pods crash-loop, the
phase's verify (`backend_pod_restarts`) fails, and the phase rolls back: the Deployment is put
back on the image recorded before the change (the seed's "instant rollback")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm
from tests.examples.test_seed_rehearsals import SEEDS, SVETU_ROLES, rehearse, steps
from tminus.plan.loader import parse_yaml
from tminus.testing.kubeapi import KubeApi

PHASE = "Phase 5: Green Environment Deployment (Day 15)"
REHEARSAL = Path(".tminus") / "rehearsal" / "svetu-unified-attributes"


def phase5_kube_plan() -> dict[str, Any]:
    """The seed's plan with phase 5 reduced to its two `kubernetes` steps as written and its
    two Kubernetes verify checks as written; its go/no-go, blue_green switch (SSH fleet and
    nginx), flag rollout, waits, other verify checks (Prometheus, replica) and `rollback:`
    steps (flag store, nginx router) are removed."""
    data, _, problems = parse_yaml((SEEDS / "svetu-unified-attributes.yaml").read_text(), "p")
    assert not problems
    phase = next(p for p in data["phases"] if p["name"] == PHASE)
    kube = [s for s in phase["steps"] if s["kind"] == "kubernetes"]
    assert [s["action"] for s in kube] == ["set_image", "rollout_status"]
    assert kube[0]["containers"] == {"backend": "${backend_image}"}
    phase["steps"] = kube
    phase["verify"] = [
        v for v in phase["verify"] if v in ("backend_rolled_out", "backend_pod_restarts")
    ]
    assert phase["verify"] == ["backend_rolled_out", "backend_pod_restarts"]
    phase.pop("rollback")
    plan: dict[str, Any] = data
    return plan


@pytest.fixture
def cluster(tm: Tm) -> Iterator[KubeApi]:
    """The stand-in with the seed's Deployment `backend` (namespace svetu) on the stable image
    backend:v1.0.0, 3 replicas; its kubeconfig where the plan's rehearsal default looks."""
    with KubeApi(namespace="svetu", deadline_scale=0.005) as api:
        api.add_deployment("backend", {"backend": "backend:v1.0.0"}, replicas=3)
        (tm.cwd / REHEARSAL).mkdir(parents=True)
        api.write_kubeconfig(tm.cwd / REHEARSAL / "kubeconfig")
        yield api


def test_svetu_backend_rollout_fails_its_verify_and_goes_back_to_the_recorded_image(
    tm: Tm, cluster: KubeApi
) -> None:
    """Phase 5's `set_image` (backend=backend:v1.1.0, the plan's rehearsal default of
    `backend_image`) and `rollout_status` run against the stand-in; the new pods crash-loop (4
    restarts each), so `backend_pod_restarts` (since: rollout, CRITICAL at 3) fails the verify
    while `backend_rolled_out` passes; the phase rolls back and the Deployment runs
    backend:v1.0.0 again (a JSON patch of the pod template recorded before the change, a new
    revision, the rollout waited for).

    Stand-ins: the Kubernetes API server (tminus.testing.kubeapi) with Deployment `backend`;
    the crash loop is the stand-in's restart count for pods running backend:v1.1.0.

    Reductions: the plan is rewritten (`phase5_kube_plan`): phase 5 keeps only its two
    `kubernetes` steps and its two Kubernetes verify checks, as written; `--phase`,
    `--skip-checklist`, approvals by the test.

    Mutations tried: the compensation recorded after the patch instead of before (see
    test_kube_steps.py): the restore puts backend:v1.1.0 "back" and this test fails."""
    cluster.image_restarts["backend:v1.1.0"] = 4
    path = tm.cwd / "svetu-phase5-kube.yaml"
    path.write_text(json.dumps(phase5_kube_plan(), indent=1))
    done = rehearse(tm, str(path), PHASE, SVETU_ROLES)
    assert done.returncode == 1, done.stdout + done.stderr
    assert cluster.images("backend") == {"backend": "backend:v1.0.0"}
    dep = cluster.deployment("backend")
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert dep["status"]["availableReplicas"] == 3 and dep["status"]["updatedReplicas"] == 3
    patches = cluster.patches()
    assert json.loads(patches[0]["body"]) == {
        "spec": {
            "template": {"spec": {"containers": [{"name": "backend", "image": "backend:v1.1.0"}]}}
        }
    }
    assert patches[-1]["content_type"] == "application/json-patch+json"
    out = done.stdout
    assert "deployment backend successfully rolled out (3 available)" in out
    assert "12 is CRITICAL (>= 3)" in out  # 3 pods x 4 restarts
    assert "back to backend=backend:v1.0.0" in out
    assert tm.latest()["state"] == "rolled_back"
    rows = steps(tm)
    restored = [r for r in rows.values() if r["title"].startswith("Restore deployment backend")]
    assert len(restored) == 1 and restored[0]["state"] == "succeeded", rows
    assert restored[0]["artifacts"]["images"] == {"backend": "backend:v1.0.0"}
