"""The pure parts of the kubernetes kind (plan/_steps_kube.py): the runbook's description
(values as written) and its manual kubectl fallback; the rollout rule on API JSON."""

from __future__ import annotations

from typing import Any

from tminus.plan._steps_kube import (
    KubernetesStep,
    describe_kubernetes,
    kubectl_fallback,
    rollout_state,
)
from tminus.plan.describe import AS_WRITTEN, plain
from tminus.plan.model import Plan

PLAN: dict[str, Any] = {
    "tminus": 1,
    "name": "k",
    "environment": "test",
    "targets": {
        "kubernetes": {"prod": {"kubeconfig": "${kc}", "context": "prod", "namespace": "shop"}}
    },
    "phases": [{"name": "p", "steps": [{"kind": "wait", "duration": "1s"}]}],
}


def _step(**fields: Any) -> KubernetesStep:
    return KubernetesStep.model_validate(
        {"kind": "kubernetes", "target": "prod", "deployment": "api", **fields}
    )


def test_the_runbook_shows_the_patch_as_written() -> None:
    s = _step(action="set_env", container="api", env={"TOKEN": "${secret_token}"}, wait=True)
    assert plain(describe_kubernetes(s, AS_WRITTEN)) == (
        "Deployment api on prod: set env — strategic merge patch "
        '{"spec": {"template": {"spec": {"containers": [{"name": "api", "env": '
        '[{"name": "TOKEN", "value": "${secret_token}"}]}]}}}}, then wait for the rollout'
    )
    restart = plain(describe_kubernetes(_step(action="restart"), AS_WRITTEN))
    assert '"kubectl.kubernetes.io/restartedAt": "<now, RFC 3339>"' in restart
    undo = plain(describe_kubernetes(_step(action="undo", to_revision=4), AS_WRITTEN))
    assert "roll back to revision 4 (JSON patch of /spec/template" in undo


def test_the_kubectl_fallback() -> None:
    plan = Plan.model_validate(PLAN)
    k = "kubectl --kubeconfig '${kc}' --context prod -n shop"
    s = _step(action="set_image", containers={"api": "api:2"}, wait=True, timeout="5m")
    assert kubectl_fallback(plan, s) == [
        f"{k} set image deployment/api api=api:2",
        f"{k} rollout status deployment/api --timeout=300s",
    ]
    assert kubectl_fallback(plan, _step(action="scale", replicas=0)) == [
        f"{k} scale deployment/api --replicas=0"
    ]
    assert kubectl_fallback(plan, _step(action="undo")) == [f"{k} rollout undo deployment/api"]


def test_the_rollout_rule() -> None:
    def dep(gen: int, seen: int, **status: Any) -> dict[str, Any]:
        return {
            "metadata": {"name": "api", "generation": gen},
            "spec": {"replicas": 3, "progressDeadlineSeconds": 60},
            "status": {"observedGeneration": seen, **status},
        }

    full = {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}
    assert rollout_state(dep(2, 1, **full))[0] == "waiting"
    assert rollout_state(dep(2, 2, **full))[0] == "done"
    assert rollout_state(dep(2, 2, **{**full, "replicas": 4}))[1] == (
        "1 old replicas are pending termination"
    )
    assert rollout_state(dep(2, 2, **{**full, "availableReplicas": 1}))[1] == (
        "1 of 3 updated replicas are available"
    )
    late = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    state, said = rollout_state(dep(2, 2, **full, conditions=[{**late, "message": "slow"}]))
    assert state == "failed" and said.endswith("ProgressDeadlineExceeded: slow")
