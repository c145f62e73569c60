"""The **stand-in** Kubernetes API server itself (tminus.testing.kubeapi): it answers like the
real API where tminus could get it wrong — the bearer token, the patch Content-Types, malformed
and invalid patches, immutable fields — and its controller makes ReplicaSets and revisions as
the real one does. Requests are sent with httpx, as a client would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tminus.testing.kubeapi import KubeApi

DEP = "/apis/apps/v1/namespaces/default/deployments/api"
SMP = "application/strategic-merge-patch+json"


@pytest.fixture
def api() -> Iterator[KubeApi]:
    with KubeApi(deadline_scale=0.005, observe_delay=0.0) as server:
        server.add_deployment("api", {"api": "api:1", "sidecar": "proxy:1"}, ready_after=0.0)
        yield server


def _req(
    api: KubeApi,
    method: str,
    path: str,
    body: Any = None,
    ctype: str = SMP,
    token: str | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or api.token}", "Content-Type": ctype}
    data = (
        body
        if isinstance(body, bytes)
        else (json.dumps(body).encode() if body is not None else None)
    )
    return httpx.request(method, api.url + path, headers=headers, content=data, timeout=10)


def test_a_wrong_token_is_401_as_a_status(api: KubeApi) -> None:
    r = _req(api, "GET", DEP, token="nope")
    assert r.status_code == 401
    assert r.json()["kind"] == "Status" and r.json()["reason"] == "Unauthorized"


def test_patch_content_types_and_bodies_are_checked(api: KubeApi) -> None:
    image = {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api:2"}]}}}}
    assert _req(api, "PATCH", DEP, image, ctype="application/json").status_code == 415
    assert _req(api, "PATCH", DEP, b"{not json").status_code == 400
    no_key = {"spec": {"template": {"spec": {"containers": [{"image": "api:2"}]}}}}
    r = _req(api, "PATCH", DEP, no_key)
    assert r.status_code == 422 and "merge key: name" in r.json()["message"]
    selector = {"spec": {"selector": {"matchLabels": {"app": "other"}}}}
    assert "immutable" in _req(api, "PATCH", DEP, selector).json()["message"]
    bad_test = [{"op": "test", "path": "/spec/replicas", "value": 9}]
    assert _req(api, "PATCH", DEP, bad_test, ctype="application/json-patch+json").status_code == 422
    assert api.images("api") == {"api": "api:1", "sidecar": "proxy:1"}  # nothing applied
    r = _req(api, "PATCH", DEP, image)
    assert r.status_code == 200
    # a strategic merge keeps the other container; a JSON merge patch replaces the list
    assert api.images("api") == {"api": "api:2", "sidecar": "proxy:1"}
    merge = {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api:3"}]}}}}
    assert _req(api, "PATCH", DEP, merge, ctype="application/merge-patch+json").status_code == 200
    assert api.images("api") == {"api": "api:3"}


def test_revisions_and_replicasets_follow_the_controller(api: KubeApi) -> None:
    """A template change makes a ReplicaSet with the next revision; going back to an old
    template takes its ReplicaSet back with the next revision (kubectl rollout undo's view)."""
    for image in ("api:2", "api:1"):
        patch = {"spec": {"template": {"spec": {"containers": [{"name": "api", "image": image}]}}}}
        assert _req(api, "PATCH", DEP, patch).status_code == 200
    dep = _req(api, "GET", DEP).json()
    assert dep["metadata"]["generation"] == 3
    assert dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    sets = _req(
        api, "GET", "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app%3Dapi"
    ).json()
    assert sets["kind"] == "ReplicaSetList"
    revs = {
        rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["metadata"]["annotations"][
            "deployment.kubernetes.io/revision"
        ]
        for rs in sets["items"]
    }
    assert revs == {"api:1": "3", "api:2": "2"}
    none = _req(api, "GET", "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app%3Dx")
    assert none.json()["items"] == []
    pods = _req(api, "GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dapi").json()
    assert pods["kind"] == "PodList" and len(pods["items"]) == 2


def test_the_scale_subresource(api: KubeApi) -> None:
    scale = _req(api, "GET", DEP + "/scale").json()
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2} and scale["status"]["selector"] == "app=api"
    r = _req(
        api,
        "PATCH",
        DEP + "/scale",
        {"spec": {"replicas": -1}},
        ctype="application/merge-patch+json",
    )
    assert r.status_code == 422
    r = _req(
        api,
        "PATCH",
        DEP + "/scale",
        {"spec": {"replicas": 4}},
        ctype="application/merge-patch+json",
    )
    assert r.status_code == 200 and r.json()["spec"]["replicas"] == 4
    assert api.deployment("api")["spec"]["replicas"] == 4


def test_a_missing_deployment_or_namespace_is_404(api: KubeApi) -> None:
    r = _req(api, "GET", "/apis/apps/v1/namespaces/default/deployments/nope")
    assert r.status_code == 404 and r.json()["message"] == 'deployments.apps "nope" not found'
    assert _req(api, "GET", "/apis/apps/v1/namespaces/other/deployments/api").status_code == 404
