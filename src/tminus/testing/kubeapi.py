"""A **stand-in** for the Kubernetes API server, for tests and rehearsals (no cluster can run
on these machines: issue #19 allows this one stand-in, and docs/kubernetes.md says what it
does not simulate).

A small HTTP server in a thread on a free loopback port, implementing only the endpoints
tminus's ``kubernetes`` step kind and check source use, with the real API's JSON shapes
(apps/v1 Deployment, ReplicaSet, autoscaling/v1 Scale, v1 Pod, v1 Status for errors):

- ``GET/PATCH /apis/apps/v1/namespaces/NS/deployments/NAME``, ``GET …/deployments`` (list);
- ``GET/PATCH …/deployments/NAME/scale``;
- ``GET /apis/apps/v1/namespaces/NS/replicasets`` and ``GET /api/v1/namespaces/NS/pods``
  (``labelSelector`` of ``key=value`` terms).

A PATCH must carry one of the three patch Content-Types (strategic merge, JSON merge, JSON
patch; anything else: 415) and a well-formed body (malformed JSON: 400; a patch that does not
apply, or leaves the object invalid or changes an immutable field: 422), as the real API
answers. Every request needs the bearer token of the kubeconfig it writes (else 401).

The controller is simulated on read, from the time of the last change: a pod template change
bumps ``metadata.generation`` and makes a new ReplicaSet with the next
``deployment.kubernetes.io/revision`` (or, as the real controller does, takes back the old
ReplicaSet with the same template and gives it the next revision); the spec is observed after
``observe_delay`` seconds; the rollout becomes available after the deployment's ``ready_after``
seconds, or, with ``stall=True``, never (a rollout to a new template; going back to a
ReplicaSet that ran completes): its Progressing condition turns False with reason
ProgressDeadlineExceeded after ``progressDeadlineSeconds × deadline_scale`` seconds. Pods are
listed for every ReplicaSet with replicas; container restarts are set by
:meth:`KubeApi.set_restarts`, or for every pod running an image by ``image_restarts``.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tminus.testing._kube_objects import (
    REVISION,
    ApiError,
    conditions,
    deployment_json,
    pod_json,
    replicaset_json,
    scale_json,
    thash,
    validate,
)
from tminus.testing._kube_patch import PatchError, apply_patch

__all__ = ["KubeApi"]

_PATCH_TYPES = {
    "application/strategic-merge-patch+json": "strategic",
    "application/merge-patch+json": "merge",
    "application/json-patch+json": "json",
}


class _Deploy:
    """One Deployment, its ReplicaSets and the simulated rollout."""

    def __init__(self, obj: dict[str, Any], ready_after: float, stall: bool) -> None:
        self.obj = obj
        self.ready_after = ready_after
        self.stall = stall
        self.changed = time.monotonic()
        self.old_left = 0  # old replicas available when the rollout began
        self.old_rs: str | None = None  # the ReplicaSet that held them
        self.stalling = False  # does the rollout in progress stall?
        self.start_available = 0  # the current ReplicaSet's replicas available then
        self.rs: list[dict[str, Any]] = []
        self.restarts: dict[str, int] = {}


class KubeApi:
    """The stand-in API server. ``deadline_scale`` shortens progressDeadlineSeconds (0.01:
    600 s → 6 s); ``observe_delay``: seconds before the controller observes a new spec."""

    def __init__(
        self,
        *,
        namespace: str = "default",
        token: str = "standin-token",
        deadline_scale: float = 1.0,
        observe_delay: float = 0.05,
    ) -> None:
        self.namespace = namespace
        self.token = token
        self.deadline_scale = deadline_scale
        self.observe_delay = observe_delay
        self.requests: list[dict[str, Any]] = []
        #: image → the restartCount of every container running it (a crash-looping image)
        self.image_restarts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._deploys: dict[str, _Deploy] = {}
        self._version = 1000
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- set-up and inspection (the test's side) -----------------------------------------

    def add_deployment(
        self,
        name: str,
        containers: dict[str, str],
        *,
        replicas: int = 2,
        env: dict[str, dict[str, str]] | None = None,
        ready_after: float = 0.3,
        stall: bool = False,
        progress_deadline: int = 600,
    ) -> None:
        """A Deployment already rolled out (revision 1) with these containers (name → image)
        and env (container → NAME → value)."""
        obj = deployment_json(
            name, self.namespace, containers, env or {}, replicas, progress_deadline
        )
        with self._lock:
            d = _Deploy(obj, ready_after, stall)
            d.changed -= 3600  # rolled out long ago
            self._new_rs(d)
            self._deploys[name] = d

    def set_behaviour(
        self, name: str, *, ready_after: float | None = None, stall: bool | None = None
    ) -> None:
        """How the next rollouts of ``name`` go (and the one in progress)."""
        with self._lock:
            d = self._deploys[name]
            if ready_after is not None:
                d.ready_after = ready_after
            if stall is not None:
                d.stall = stall
                d.stalling = d.stalling and stall

    def set_progress_deadline(self, name: str, seconds: int) -> None:
        """Set ``spec.progressDeadlineSeconds`` (as the cluster's owner would, no rollout)."""
        with self._lock:
            self._deploys[name].obj["spec"]["progressDeadlineSeconds"] = seconds

    def set_restarts(self, name: str, count: int, *, pod: int = 0) -> None:
        """Set the restartCount of the first container of pod number ``pod`` of the newest
        ReplicaSet (its last termination: now)."""
        with self._lock:
            d = self._deploys[name]
            d.restarts[f"{self._newest(d)['metadata']['name']}-{pod}"] = count

    def deployment(self, name: str) -> dict[str, Any]:
        """The Deployment as the API returns it now."""
        with self._lock:
            return self._read(self._deploys[name])

    def images(self, name: str) -> dict[str, str]:
        spec = self.deployment(name)["spec"]["template"]["spec"]
        return {c["name"]: c["image"] for c in spec["containers"]}

    def env(self, name: str, container: str) -> dict[str, str]:
        spec = self.deployment(name)["spec"]["template"]["spec"]
        (c,) = [c for c in spec["containers"] if c["name"] == container]
        return {e["name"]: e.get("value", "") for e in c.get("env", [])}

    def patches(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "PATCH"]

    # --- the server --------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KubeApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                api._handle(self, "GET")

            def do_PATCH(self) -> None:
                api._handle(self, "PATCH")

            def do_PUT(self) -> None:
                api._handle(self, "PUT")

            def do_POST(self) -> None:
                api._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KubeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path, *, context: str = "standin") -> Path:
        """A kubeconfig pointing at this server, with its bearer token (a file 0600)."""
        text = json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                "users": [{"name": "tminus", "user": {"token": self.token}}],
                "contexts": [
                    {
                        "name": context,
                        "context": {
                            "cluster": "standin",
                            "user": "tminus",
                            "namespace": self.namespace,
                        },
                    }
                ],
                "current-context": context,
            },
            indent=2,
        )
        path.write_text(text)  # JSON is YAML: kubeconfig readers take it
        path.chmod(0o600)
        return path

    # --- requests ----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip()
        self.requests.append(
            {
                "method": method,
                "path": parts.path,
                "query": parts.query,
                "content_type": ctype,
                "body": body.decode(errors="replace"),
            }
        )
        try:
            if h.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            with self._lock:
                code, out = self._route(method, parts.path, parse_qs(parts.query), ctype, body)
        except ApiError as exc:
            code, out = exc.body["code"], exc.body
        data = json.dumps(out).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], ctype: str, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        seg = path.strip("/").split("/")
        selector = (query.get("labelSelector") or [""])[0]
        pods = seg[:3] == ["api", "v1", "namespaces"] and seg[4:] == ["pods"]
        if pods and method == "GET":
            self._namespace(seg[3])
            return 200, self._list("PodList", "v1", self._pods(), selector)
        if seg[:3] == ["apis", "apps", "v1"] and len(seg) >= 6 and seg[3] == "namespaces":
            self._namespace(seg[4])
            res, rest = seg[5], seg[6:]
            if res == "replicasets" and not rest and method == "GET":
                items = [copy.deepcopy(rs) for d in self._deploys.values() for rs in self._rs(d)]
                return 200, self._list("ReplicaSetList", "apps/v1", items, selector)
            if res == "deployments" and not rest and method == "GET":
                items = [self._read(d) for d in self._deploys.values()]
                return 200, self._list("DeploymentList", "apps/v1", items, selector)
            if res == "deployments" and rest:
                d = self._deploys.get(rest[0])
                if d is None:
                    raise ApiError(404, "NotFound", f'deployments.apps "{rest[0]}" not found')
                if len(rest) == 1 and method == "GET":
                    return 200, self._read(d)
                if len(rest) == 1 and method == "PATCH":
                    return 200, self._patch(d, ctype, body)
                if rest[1:] == ["scale"] and method == "GET":
                    return 200, self._scale(d)
                if rest[1:] == ["scale"] and method == "PATCH":
                    return 200, self._patch_scale(d, ctype, body)
                raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        raise ApiError(404, "NotFound", f"the server could not find the requested resource {path}")

    def _namespace(self, ns: str) -> None:
        if ns != self.namespace:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')

    def _list(
        self, kind: str, api: str, items: list[dict[str, Any]], selector: str
    ) -> dict[str, Any]:
        want = dict(t.split("=", 1) for t in selector.split(",") if "=" in t)
        kept = [
            i
            for i in items
            if all(i["metadata"].get("labels", {}).get(k) == v for k, v in want.items())
        ]
        return {
            "kind": kind,
            "apiVersion": api,
            "metadata": {"resourceVersion": str(self._version)},
            "items": kept,
        }

    # --- patches -----------------------------------------------------------------------

    def _decode(self, ctype: str, body: bytes) -> tuple[str, Any]:
        ptype = _PATCH_TYPES.get(ctype)
        if ptype is None:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(_PATCH_TYPES)}",
            )
        try:
            patch = json.loads(body)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"error decoding patch: {exc}") from None
        return ptype, patch

    def _patch(self, d: _Deploy, ctype: str, body: bytes) -> dict[str, Any]:
        ptype, patch = self._decode(ctype, body)
        before = self._read(d)
        try:
            after = apply_patch(ptype, copy.deepcopy(d.obj), patch)
        except PatchError as exc:
            raise ApiError(422, "Invalid", f"the patch does not apply: {exc}") from None
        validate(after, d.obj)
        after.pop("status", None)
        self._commit(d, after, before)
        return self._read(d)

    def _patch_scale(self, d: _Deploy, ctype: str, body: bytes) -> dict[str, Any]:
        ptype, patch = self._decode(ctype, body)
        before = self._read(d)
        try:
            scale = apply_patch(ptype, self._scale(d), patch)
        except PatchError as exc:
            raise ApiError(422, "Invalid", f"the patch does not apply: {exc}") from None
        replicas = scale.get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(422, "Invalid", "spec.replicas: must be a non-negative integer")
        after = copy.deepcopy(d.obj)
        after["spec"]["replicas"] = replicas
        self._commit(d, after, before)
        return self._scale(d)

    def _commit(self, d: _Deploy, after: dict[str, Any], before: dict[str, Any]) -> None:
        old = d.obj
        if after["spec"] == old["spec"]:
            d.obj = after
            return
        status = before.get("status", {})
        meta = after["metadata"]
        meta["generation"] = int(old["metadata"]["generation"]) + 1
        d.obj = after
        if after["spec"]["template"] != old["spec"]["template"]:
            d.old_left = int(status.get("availableReplicas") or 0)
            d.old_rs = self._newest(d)["metadata"]["name"]
            d.start_available = 0
            known = {rs["metadata"]["labels"]["pod-template-hash"] for rs in d.rs}
            # a template never run stalls when asked; going back to a ReplicaSet that ran
            # (a rollback) completes: its pods were fine
            d.stalling = d.stall and thash(after["spec"]["template"]) not in known
            self._new_rs(d)
        else:
            d.old_left = 0
            d.start_available = min(
                int(status.get("availableReplicas") or 0), int(after["spec"]["replicas"])
            )
        d.changed = time.monotonic()
        self._version += 1

    def _new_rs(self, d: _Deploy) -> None:
        """The ReplicaSet of the current template: an old one taken back, or a new one; it
        gets the next revision, as the Deployment does."""
        template = d.obj["spec"]["template"]
        h = thash(template)
        revision = 1 + max((int(rs["metadata"]["annotations"][REVISION]) for rs in d.rs), default=0)
        found = [rs for rs in d.rs if rs["metadata"]["labels"]["pod-template-hash"] == h]
        if found:
            rs = found[0]
            d.rs.remove(rs)
        else:
            rs = replicaset_json(d.obj, h)
        rs["metadata"]["annotations"][REVISION] = str(revision)
        d.obj["metadata"].setdefault("annotations", {})[REVISION] = str(revision)
        d.rs.append(rs)  # the newest last

    # --- the simulated controller ------------------------------------------------------

    def _newest(self, d: _Deploy) -> dict[str, Any]:
        return d.rs[-1]

    def _progress(self, d: _Deploy) -> tuple[bool, bool, bool]:
        """(observed, complete, past the deadline) of the current rollout."""
        elapsed = time.monotonic() - d.changed
        deadline = float(d.obj["spec"].get("progressDeadlineSeconds", 600)) * self.deadline_scale
        complete = not d.stalling and elapsed >= d.ready_after
        return elapsed >= self.observe_delay, complete, not complete and elapsed >= deadline

    def _rs(self, d: _Deploy) -> list[dict[str, Any]]:
        """The ReplicaSets with their replica counts now."""
        _observed, complete, _late = self._progress(d)
        want = int(d.obj["spec"]["replicas"])
        for rs in d.rs:
            new = rs is self._newest(d)
            old = rs["metadata"]["name"] == d.old_rs
            count = want if new else (d.old_left if old and not complete else 0)
            avail = (want if complete else d.start_available) if new else count
            rs["spec"]["replicas"] = count
            rs["status"] = {
                "replicas": count,
                "readyReplicas": avail,
                "availableReplicas": avail,
                "observedGeneration": 1,
            }
        return d.rs

    def _read(self, d: _Deploy) -> dict[str, Any]:
        observed, complete, late = self._progress(d)
        obj = copy.deepcopy(d.obj)
        new = self._newest(d)["metadata"]["name"]
        want = int(obj["spec"]["replicas"])
        sets = self._rs(d)
        total = sum(rs["status"]["replicas"] for rs in sets)
        avail = sum(rs["status"]["availableReplicas"] for rs in sets)
        if complete:
            why = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{new}" has successfully progressed.',
            )
        elif late:
            why = (
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{new}" has timed out progressing.',
            )
        else:
            why = ("True", "ReplicaSetUpdated", f'ReplicaSet "{new}" is progressing.')
        obj["status"] = {
            "observedGeneration": obj["metadata"]["generation"] - (0 if observed else 1),
            "replicas": total,
            "updatedReplicas": want,
            "readyReplicas": avail,
            "availableReplicas": avail,
            "unavailableReplicas": max(0, total - avail),
            "conditions": conditions(avail >= want, why),
        }
        return obj

    def _scale(self, d: _Deploy) -> dict[str, Any]:
        obj = self._read(d)
        return scale_json(obj, self._version)

    def _crash(self, rs: dict[str, Any]) -> int:
        first = rs["spec"]["template"]["spec"]["containers"][0]["image"]
        return self.image_restarts.get(first, 0)

    def _pods(self) -> list[dict[str, Any]]:
        return [
            pod_json(rs, i, d.restarts.get(f"{rs['metadata']['name']}-{i}", self._crash(rs)))
            for d in self._deploys.values()
            for rs in self._rs(d)
            for i in range(rs["spec"]["replicas"])
        ]
