"""The ``kubernetes`` step kind through ``tminus run`` of small plans, against the **stand-in**
Kubernetes API server (tminus.testing.kubeapi: no cluster can run here; it implements the
Deployment, scale, ReplicaSet and Pod endpoints with the real API's JSON and checks each
patch's Content-Type and body). Every assertion on the cluster reads the stand-in's state
after the run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.conftest import Tm
from tests.kube.conftest import plan, step
from tminus.plan._steps_kube import RESTARTED_AT, REVISION
from tminus.testing.kubeapi import KubeApi

FAIL = {"kind": "run", "name": "a later step fails", "command": "false"}
STRATEGIC = "application/strategic-merge-patch+json"


def _revision(kube: KubeApi) -> str:
    return str(kube.deployment("api")["metadata"]["annotations"][REVISION])


def test_set_image_waits_for_the_rollout_and_a_failed_phase_restores_the_recorded_image(
    tm: Tm, kube: KubeApi
) -> None:
    """set_image (wait: true) rolls api:1 → api:2 and waits for the new ReplicaSet; a later
    step fails, so the recorded undo puts api:1 back (a JSON patch of the recorded pod
    template) and waits again. Uses the stand-in API server.

    Mutation tried: the record written after the patch instead of before (`record_before`
    moved below `kube.patch` in steps/kubernetes.py): the record holds api:2, the rollback
    "restores" api:2 and this test fails on the image."""
    done = tm("run", str(plan(tm, [step("set_image", containers={"api": "api:2"}, wait=True)])))
    assert done.returncode == 0, done.stdout + done.stderr
    assert kube.images("api") == {"api": "api:2"} and _revision(kube) == "2"
    assert "successfully rolled out" in done.stdout
    first = kube.patches()[0]
    assert first["content_type"] == STRATEGIC
    assert json.loads(first["body"]) == {
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api:2"}]}}}
    }

    steps = [step("set_image", containers={"api": "api:3"}, wait=True), FAIL]
    done = tm("run", str(plan(tm, steps)))
    assert done.returncode == 1, done.stdout + done.stderr
    assert kube.images("api") == {"api": "api:2"}, done.stdout  # as recorded before api:3
    assert kube.env("api", "api") == {"MODE": "old"}
    last = kube.patches()[-1]
    assert last["content_type"] == "application/json-patch+json"
    assert json.loads(last["body"])[0]["path"] == "/spec/template"
    assert "back to api=api:2" in done.stdout
    assert tm.latest()["state"] == "rolled_back"


def test_set_env_masks_the_secret_and_its_undo_restores_the_env(tm: Tm, kube: KubeApi) -> None:
    """set_env with a secret value (with a quote, which JSON escapes): the dry run shows the
    exact patch with `***`, the API receives the value, and neither the console, the log nor
    the stored events hold it; the failed phase puts the env back exactly (the added
    variables gone). Uses the stand-in API server."""
    secret = 'pa"ss-7Q9x'
    env = {"API_TOKEN": secret}
    steps = [
        step(
            "set_env",
            container="api",
            env={"USE_UNIFIED_ATTRIBUTES": "false", "TOKEN": "${api_token}"},
        ),
        FAIL,
    ]
    path = plan(tm, steps)
    dry = tm("run", str(path), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert (
        '{"name": "USE_UNIFIED_ATTRIBUTES", "value": "false"}, {"name": "TOKEN", "value": "***"}'
        in dry.stdout
    )
    assert "pa" + '\\"ss' not in dry.stdout and secret not in dry.stdout
    assert kube.patches() == []  # the dry run patched nothing

    done = tm("run", str(path), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    sent = json.loads(kube.patches()[0]["body"])
    container = sent["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "TOKEN", "value": secret} in container["env"]
    assert kube.env("api", "api") == {"MODE": "old"}  # restored: the two variables gone
    log = tm("log", tm.latest()["id"], "--output", "json", check=0).stdout
    for text in (done.stdout, done.stderr, log):
        assert secret not in text and 'pa\\"ss' not in text


def test_scale_uses_the_scale_subresource_and_its_undo_restores_the_replicas(
    tm: Tm, kube: KubeApi
) -> None:
    """scale to 5 through the scale subresource (a JSON merge patch), waiting until the
    replicas are available; the failed phase puts the recorded 2 back. Uses the stand-in API
    server."""
    done = tm("run", str(plan(tm, [step("scale", replicas=5, wait=True), FAIL])))
    assert done.returncode == 1, done.stdout + done.stderr
    scale = [p for p in kube.patches() if p["path"].endswith("/scale")]
    assert [p["content_type"] for p in scale] == ["application/merge-patch+json"] * 2
    assert [json.loads(p["body"]) for p in scale] == [
        {"spec": {"replicas": 5}},
        {"spec": {"replicas": 2}},
    ]
    assert "api: 2 → 5 replicas" in done.stdout
    assert kube.deployment("api")["spec"]["replicas"] == 2
    assert kube.images("api") == {"api": "api:1"} and _revision(kube) == "1"


def test_restart_annotates_the_pod_template_like_kubectl(tm: Tm, kube: KubeApi) -> None:
    """restart sets kubectl.kubernetes.io/restartedAt on the pod template (a new ReplicaSet,
    revision 2) and waits for it; it registers no undo (nothing to put back). Uses the
    stand-in API server."""
    done = tm("run", str(plan(tm, [step("restart", wait=True)])))
    assert done.returncode == 0, done.stdout + done.stderr
    template = kube.deployment("api")["spec"]["template"]
    stamp = template["metadata"]["annotations"][RESTARTED_AT]
    assert stamp.endswith("Z") and abs(time.time() - _epoch(stamp)) < 120
    assert _revision(kube) == "2" and kube.images("api") == {"api": "api:1"}
    done = tm("run", str(plan(tm, [step("restart"), FAIL])))
    assert done.returncode == 1
    assert "rolling back: 0 action(s)" in done.stdout or "rolling back" not in done.stdout
    assert _revision(kube) == "3"  # the second restart stands: no undo of a restart


def _epoch(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_undo_goes_back_to_the_recorded_revision(tm: Tm, kube: KubeApi) -> None:
    """undo (no to_revision) puts back the previous revision's pod template (kubectl rollout
    undo: the ReplicaSet with that revision annotation, by a JSON patch); with to_revision,
    that one. The controller gives the template the next revision. Uses the stand-in API
    server."""
    for image in ("api:2", "api:3"):
        step_ = step("set_image", containers={"api": image}, wait=True)
        assert tm("run", str(plan(tm, [step_]))).returncode == 0
    assert _revision(kube) == "3"
    done = tm("run", str(plan(tm, [step("undo", wait=True)])))
    assert done.returncode == 0, done.stdout + done.stderr
    assert kube.images("api") == {"api": "api:2"} and _revision(kube) == "4"
    assert "back to revision 2" in done.stdout
    done = tm("run", str(plan(tm, [step("undo", to_revision=1, wait=True)])))
    assert done.returncode == 0, done.stdout + done.stderr
    assert kube.images("api") == {"api": "api:1"} and _revision(kube) == "5"
    done = tm("run", str(plan(tm, [step("undo", to_revision=9)])))
    assert done.returncode == 1 and "has no revision 9" in done.stdout


def test_a_rollout_stalled_past_its_deadline_fails_with_the_reason(tm: Tm, kube: KubeApi) -> None:
    """A rollout that never becomes available: its Progressing condition turns False with
    ProgressDeadlineExceeded after progressDeadlineSeconds (600 s, scaled to 3 s on the
    stand-in); rollout_status fails with that reason and message, not by the step's 60 s
    timeout, and the set_image's undo puts api:1 back. Uses the stand-in API server.

    Mutation tried: the ProgressDeadlineExceeded test removed from `rollout_state`
    (plan/_steps_kube.py): the wait runs into the 60 s step timeout, the message lacks the
    reason, and this test fails."""
    kube.set_behaviour("api", stall=True)
    steps = [
        step("set_image", containers={"api": "api:broken"}),
        {**step("rollout_status"), "timeout": "60s"},
    ]
    done = tm("run", str(plan(tm, steps)))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ProgressDeadlineExceeded" in done.stdout
    assert "has timed out progressing" in done.stdout
    assert "did not finish within" not in done.stdout
    assert kube.images("api") == {"api": "api:1"}


def test_the_step_timeout_stops_the_wait(tm: Tm, kube: KubeApi) -> None:
    """A rollout that stalls with a far deadline (10 hours): the step's 15 s timeout ends the
    wait (the step's own message, or the engine's time limit when the machine is slow),
    after saying what it was waiting for; the undo puts api:1 back. Uses the stand-in API
    server."""
    kube.set_behaviour("api", stall=True)
    path = plan(tm, [step("set_image", containers={"api": "api:slow"}, wait=True, timeout="15s")])
    spec = kube.deployment("api")["spec"]
    assert spec["progressDeadlineSeconds"] == 600
    kube.set_progress_deadline("api", 7_200_000)  # 10 hours on the stand-in's scale
    done = tm("run", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "did not finish within" in said or "timed out after 15s" in said
    assert "old replicas are pending termination" in done.stdout  # what it waited for
    assert "ProgressDeadlineExceeded" not in said
    assert kube.images("api") == {"api": "api:1"}  # the undo ran


def test_an_abort_stops_the_wait(tm: Tm, kube: KubeApi) -> None:
    """A rollout that never finishes (no deadline reached, no timeout): `tminus abort` stops
    the waiting step at once; the runner exits and stops polling the API. Uses the stand-in
    API server."""
    kube.set_behaviour("api", stall=True)
    kube.set_progress_deadline("api", 7_200_000)
    path = plan(tm, [step("set_image", containers={"api": "api:slow"}, wait=True)])
    runner = subprocess.Popen(
        [sys.executable, "-m", "tminus", "run", str(path)],
        cwd=tm.cwd,
        env=tm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300  # a loaded machine starts slowly
        while not kube.patches() and time.time() < deadline:
            time.sleep(0.1)
        assert kube.patches(), "the step never patched"
        time.sleep(1.0)  # polling the rollout now
        proc = tm("abort", "kube-1")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert runner.wait(timeout=300) == 1
    finally:
        if runner.poll() is None:
            runner.kill()
    seen = len(kube.requests)
    time.sleep(1.5)
    assert len(kube.requests) == seen, "the wait still polls the API after the abort"
    assert tm.json("list")[0]["state"] == "aborted"
