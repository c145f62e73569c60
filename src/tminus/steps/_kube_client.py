"""The Kubernetes API as the ``kubernetes`` step kind uses it, through lightkube's async client
(imported here, on first use: never at ``tminus check`` or ``--help``). Objects come back as
the API's JSON (dicts), so the rules over them (:func:`tminus.plan._steps_kube.rollout_state`)
are the plan's pure functions. Every failure is a :class:`KubeFailed` with the API's message.

The wait (:func:`wait_rollout`) polls the Deployment every :data:`POLL_S` seconds with
``asyncio.sleep``: an abort or the step's time limit cancels it at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from tminus.plan._steps_kube import rollout_state
from tminus.plan.interpolate import Resolver
from tminus.plan.model import Plan
from tminus.plan.targets import KubernetesTarget

__all__ = ["POLL_S", "Kube", "KubeFailed", "open_kube", "wait_rollout"]

#: How often (seconds) a wait reads the Deployment.
POLL_S = 0.5


class KubeFailed(Exception):
    """The API refused, or could not be reached (the message says which)."""


def _config(name: str, target: KubernetesTarget, resolver: Resolver) -> Any:
    from lightkube import ConfigError, KubeConfig

    try:
        if target.in_cluster:
            config = KubeConfig.from_service_account()
        else:
            path = resolver.resolve(target.kubeconfig or "")
            config = KubeConfig.from_file(path)
        single = config.get(context_name=target.context)
    except (ConfigError, OSError, ValueError, KeyError) as exc:
        where = "the in-cluster service account" if target.in_cluster else "its kubeconfig"
        raise KubeFailed(f"kubernetes target '{name}': cannot use {where}: {exc}") from None
    if single is None:
        raise KubeFailed(f"kubernetes target '{name}': its kubeconfig has no context")
    return single


def check_target(name: str, target: KubernetesTarget, resolver: Resolver) -> str | None:
    """Why the target cannot be used (its kubeconfig, its context), or None."""
    try:
        _config(name, target, resolver)
    except KubeFailed as exc:
        return str(exc)
    return None


class Kube:
    """One target's API client for one step: ``async with open_kube(...) as kube``."""

    def __init__(self, name: str, target: KubernetesTarget, resolver: Resolver) -> None:
        from lightkube import AsyncClient

        single = _config(name, target, resolver)
        self.target = name
        self.namespace: str = target.namespace or single.namespace or "default"
        self._client = AsyncClient(single, namespace=self.namespace, trust_env=False)

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._client.close()

    async def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from httpx2 import HTTPError
        from lightkube import ApiError

        try:
            return await fn()
        except ApiError as exc:
            status = exc.status
            raise KubeFailed(f"{what}: {status.code} {status.reason}: {status.message}") from None
        except HTTPError as exc:
            raise KubeFailed(f"{what}: cannot reach the API of '{self.target}': {exc}") from None
        except (ValueError, TypeError) as exc:  # an answer the client's models cannot read
            raise KubeFailed(f"{what}: unexpected answer from '{self.target}': {exc}") from None

    async def deployment(self, name: str) -> dict[str, Any]:
        from lightkube.resources.apps_v1 import Deployment

        obj = await self._call(f"get deployment {name}", lambda: self._client.get(Deployment, name))
        return dict(obj.to_dict())

    async def patch(self, name: str, ptype: str, body: Any) -> dict[str, Any]:
        """Patch the Deployment (``ptype``: strategic, merge or json)."""
        from lightkube.resources.apps_v1 import Deployment
        from lightkube.types import PatchType

        kind = {"strategic": PatchType.STRATEGIC, "merge": PatchType.MERGE, "json": PatchType.JSON}
        obj = await self._call(
            f"patch deployment {name}",
            lambda: self._client.patch(Deployment, name, body, patch_type=kind[ptype]),
        )
        return dict(obj.to_dict())

    async def scale(self, name: str, replicas: int) -> int:
        """Set the replicas through the scale subresource (a JSON merge patch); the replicas
        it then reports."""
        from lightkube.resources.apps_v1 import Deployment
        from lightkube.types import PatchType

        obj = await self._call(
            f"scale deployment {name}",
            lambda: self._client.patch(
                Deployment.Scale,
                name,
                {"spec": {"replicas": replicas}},
                patch_type=PatchType.MERGE,
            ),
        )
        return int(obj.spec.replicas or 0)

    async def replicasets(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        """The ReplicaSets the Deployment owns (its selector's labels, then its uid)."""
        from lightkube.resources.apps_v1 import ReplicaSet

        labels = dep["spec"]["selector"].get("matchLabels") or {}
        uid = dep["metadata"].get("uid")

        async def listed() -> list[dict[str, Any]]:
            return [rs.to_dict() async for rs in self._client.list(ReplicaSet, labels=labels)]

        owned = []
        for rs in await self._call("list replicasets", listed):
            refs = rs.get("metadata", {}).get("ownerReferences") or []
            if any(r.get("uid") == uid for r in refs):
                owned.append(rs)
        return owned


def open_kube(plan: Plan, target: str, resolver: Resolver) -> Kube:
    config = plan.targets.kubernetes.get(target)
    if config is None:
        raise KubeFailed(f"kubernetes target '{target}' is not defined in the plan")
    return Kube(target, config, resolver)


async def wait_rollout(
    kube: Kube, name: str, limit: float | None, say: Callable[[str], None]
) -> tuple[bool, str, dict[str, Any]]:
    """Wait until the Deployment's rollout is done (kubectl's rule), failed (its progress
    deadline exceeded: the reason and message) or ``limit`` seconds have passed (default: its
    progressDeadlineSeconds and a minute). ``say`` gets each new state."""
    start = time.monotonic()
    last = ""
    while True:
        dep = await kube.deployment(name)
        state, message = rollout_state(dep)
        if message != last:
            say(message)
            last = message
        if state == "done":
            return True, message, dep
        if state == "failed":
            return False, message, dep
        if limit is None:
            limit = float(dep["spec"].get("progressDeadlineSeconds", 600)) + 60
        if time.monotonic() - start + POLL_S > limit:
            return False, f"the rollout of {name} did not finish within {limit:g}s: {message}", dep
        await asyncio.sleep(POLL_S)
