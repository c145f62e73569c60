"""The JSON of the objects the stand-in Kubernetes API server (:mod:`tminus.testing.kubeapi`)
answers with, shaped as the real API's (apps/v1 ReplicaSet, v1 Pod, v1 Status), and the
validation it applies to a patched Deployment (a **stand-in**: docs/kubernetes.md)."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "REVISION",
    "ApiError",
    "conditions",
    "deployment_json",
    "iso",
    "pod_json",
    "replicaset_json",
    "scale_json",
    "status",
    "thash",
    "validate",
]

REVISION = "deployment.kubernetes.io/revision"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.body = status(code, reason, message)


def thash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def env_list(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def validate(obj: dict[str, Any], old: dict[str, Any]) -> None:
    """422 for what the API server's validation refuses (the part tminus can get wrong)."""

    def bad(msg: str) -> ApiError:
        name = old["metadata"]["name"]
        return ApiError(422, "Invalid", f'Deployment.apps "{name}" is invalid: {msg}')

    if obj.get("metadata", {}).get("name") != old["metadata"]["name"]:
        raise bad("metadata.name: Invalid value: field is immutable")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise bad("spec: Required value")
    if spec.get("selector") != old["spec"]["selector"]:
        raise bad("spec.selector: Invalid value: field is immutable")
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise bad("spec.replicas: Invalid value: must be greater than or equal to 0")
    containers = spec.get("template", {}).get("spec", {}).get("containers")
    if not isinstance(containers, list) or not containers:
        raise bad("spec.template.spec.containers: Required value")
    for i, c in enumerate(containers):
        where = f"spec.template.spec.containers[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
            raise bad(f"{where}.name: Required value")
        if not isinstance(c.get("image"), str) or not c["image"]:
            raise bad(f"{where}.image: Required value")
        for k, e in enumerate(c.get("env") or []):
            if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
                raise bad(f"{where}.env[{k}].name: Required value")
            if "value" in e and not isinstance(e["value"], str):
                raise bad(f"{where}.env[{k}].value: Invalid value: must be a string")
    names = [c["name"] for c in containers]
    if len(set(names)) != len(names):
        raise bad("spec.template.spec.containers: Duplicate value")


def pod_json(rs: dict[str, Any], i: int, restarts: int) -> dict[str, Any]:
    """Pod number ``i`` of a ReplicaSet (ready if ``i`` is below its available count); its
    first container restarted ``restarts`` times, the last time now."""
    name = f"{rs['metadata']['name']}-{i}"
    tmpl = rs["spec"]["template"]
    started = rs["metadata"]["creationTimestamp"]
    statuses = []
    for k, c in enumerate(tmpl["spec"]["containers"]):
        st: dict[str, Any] = {
            "name": c["name"],
            "image": c["image"],
            "imageID": f"docker.io/library/{c['image']}@sha256:{thash({'i': c['image']})}",
            "containerID": f"containerd://{thash({'p': name, 'c': c['name']})}",
            "started": True,
            "ready": i < rs["status"]["availableReplicas"],
            "restartCount": restarts if k == 0 else 0,
            "state": {"running": {"startedAt": started}},
        }
        if restarts and k == 0:
            st["lastState"] = {
                "terminated": {"exitCode": 1, "reason": "Error", "finishedAt": iso(time.time())}
            }
        statuses.append(st)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": rs["metadata"]["namespace"],
            "labels": dict(tmpl["metadata"]["labels"]),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": rs["metadata"]["name"],
                    "uid": f"uid-{rs['metadata']['name']}",
                    "controller": True,
                }
            ],
            "creationTimestamp": started,
        },
        "spec": json.loads(json.dumps(tmpl["spec"])),
        "status": {"phase": "Running", "containerStatuses": statuses},
    }


def deployment_json(
    name: str,
    namespace: str,
    containers: dict[str, str],
    env: dict[str, dict[str, str]],
    replicas: int,
    progress_deadline: int,
) -> dict[str, Any]:
    """A Deployment at revision 1 (its status is computed on read)."""
    labels = {"app": name}
    spec_containers = [
        {"name": c, "image": img, **({"env": env_list(env[c])} if c in env else {})}
        for c, img in containers.items()
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "generation": 1,
            "labels": labels,
            "annotations": {REVISION: "1"},
            "creationTimestamp": iso(time.time()),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {"containers": spec_containers},
            },
            "strategy": {"type": "RollingUpdate"},
            "progressDeadlineSeconds": progress_deadline,
            "revisionHistoryLimit": 10,
        },
    }


def replicaset_json(dep: dict[str, Any], h: str) -> dict[str, Any]:
    """A new ReplicaSet of the Deployment's current template (``h``: its hash)."""
    tmpl = json.loads(json.dumps(dep["spec"]["template"]))
    tmpl["metadata"].setdefault("labels", {})["pod-template-hash"] = h
    name = dep["metadata"]["name"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{name}-{h}",
            "namespace": dep["metadata"]["namespace"],
            "labels": {**dep["spec"]["selector"]["matchLabels"], "pod-template-hash": h},
            "annotations": {},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": name,
                    "uid": dep["metadata"]["uid"],
                    "controller": True,
                }
            ],
            "creationTimestamp": iso(time.time()),
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": dict(tmpl["metadata"]["labels"])},
            "template": tmpl,
        },
        "status": {"replicas": 0},
    }


def conditions(available: bool, progressing: tuple[str, str, str]) -> list[dict[str, Any]]:
    """A Deployment's Available and Progressing conditions (status, reason, message)."""
    now = iso(time.time())
    avail = (
        ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        if available
        else (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    )
    return [
        {
            "type": kind,
            "status": st,
            "reason": reason,
            "message": message,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }
        for kind, (st, reason, message) in (("Available", avail), ("Progressing", progressing))
    ]


def scale_json(dep: dict[str, Any], version: int) -> dict[str, Any]:
    """The autoscaling/v1 Scale of a Deployment (read with its status)."""
    labels = dep["spec"]["selector"]["matchLabels"]
    meta = dep["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": str(version),
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": dep["spec"]["replicas"]},
        "status": {
            "replicas": dep["status"]["replicas"],
            "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
        },
    }
