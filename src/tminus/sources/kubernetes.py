"""``source: kubernetes``: a Deployment's ready replicas, its rollout state, or its pods'
container restarts, read through the API with lightkube (imported on first use).

- ``ready_replicas``: ``status.readyReplicas``;
- ``available``: 1 when the rollout is complete (kubectl's rule, ``rollout_state``) and the
  Deployment's Available condition is True, else 0; a rollout past its progress deadline
  fails whatever the conditions, its value the condition's reason and message (as
  ``db_health`` does for what has no number);
- ``pod_restarts``: the sum of ``restartCount`` over the containers of the Deployment's pods
  (its selector). With ``since: rollout`` only the pods of the newest ReplicaSet count (those
  the last rollout made); with a time (ISO 8601) or a duration (``30m``: that long ago), pods
  created since then count whole, and an older pod's container counts 1 if its last
  termination is since then (``restartCount`` does not say when earlier restarts happened,
  so this is a lower bound for old pods).

The client is opened here, not shared with the step kind (sources reach no step module).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from tminus.plan._steps_kube import REVISION, rollout_state
from tminus.plan.checks import KubernetesCheck
from tminus.plan.interpolate import ResolveError
from tminus.plan.values import parse_duration
from tminus.sources.base import CheckContext, Measurement

__all__ = ["SOURCE", "KubernetesSource", "restarts_since"]


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _since(value: str) -> datetime | str:
    """``rollout``, or the time a duration ago, or an ISO 8601 time (UTC if no zone)."""
    if value == "rollout":
        return value
    try:
        return datetime.now(UTC) - parse_duration(value)
    except ValueError:
        pass
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def restarts_since(pods: list[dict[str, Any]], since: datetime | None) -> int:
    """Container restarts of ``pods`` since ``since`` (all of them if None; see the module)."""
    total = 0
    for pod in pods:
        created = _time(pod.get("metadata", {}).get("creationTimestamp"))
        whole = since is None or (created is not None and created >= since)
        for st in pod.get("status", {}).get("containerStatuses") or []:
            count = int(st.get("restartCount") or 0)
            if whole:
                total += count
                continue
            ended = _time(((st.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
            if count and ended is not None and since is not None and ended >= since:
                total += 1
    return total


class KubernetesSource:
    source: ClassVar[str] = "kubernetes"

    async def measure(self, check: KubernetesCheck, ctx: CheckContext) -> Measurement:
        from httpx2 import HTTPError
        from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig

        target = ctx.plan.targets.kubernetes.get(check.target)
        if target is None:
            return Measurement(error=f"kubernetes target '{check.target}' is not defined")
        try:
            name = ctx.resolver.resolve(check.deployment)
            since = _since(ctx.resolver.resolve(check.since)) if check.since else None
            if target.in_cluster:
                config = KubeConfig.from_service_account()
            else:
                config = KubeConfig.from_file(ctx.resolver.resolve(target.kubeconfig or ""))
            single = config.get(context_name=target.context)
            if single is None:
                raise ValueError("its kubeconfig has no context")
        except (ResolveError, ConfigError, OSError, ValueError, KeyError) as exc:
            return Measurement(
                error=ctx.resolver.mask(f"kubernetes target '{check.target}': {exc}")
            )
        namespace = target.namespace or single.namespace or "default"
        client = AsyncClient(single, namespace=namespace, trust_env=False)
        try:
            return await self._measure(client, check, name, since)
        except ApiError as exc:
            s = exc.status
            return Measurement(
                error=ctx.resolver.mask(f"deployment {name}: {s.code} {s.reason}: {s.message}")
            )
        except HTTPError as exc:
            return Measurement(error=f"cannot reach the API of '{check.target}': {exc}")
        except Exception as exc:  # an answer the client cannot read: the source failed
            return Measurement(error=f"unexpected answer from the API of '{check.target}': {exc}")
        finally:
            await client.close()

    async def _measure(
        self, client: Any, check: KubernetesCheck, name: str, since: datetime | str | None
    ) -> Measurement:
        from lightkube.resources.apps_v1 import Deployment, ReplicaSet
        from lightkube.resources.core_v1 import Pod

        dep: dict[str, Any] = (await client.get(Deployment, name)).to_dict()
        status = dep.get("status") or {}
        if check.metric == "ready_replicas":
            ready = int(status.get("readyReplicas") or 0)
            want = int(dep["spec"].get("replicas", 1))
            return Measurement(value=ready, message=f"{ready} of {want} replicas ready")
        if check.metric == "available":
            state, message = rollout_state(dep)
            conds = {c.get("type"): c for c in status.get("conditions") or []}
            up = conds.get("Available", {}).get("status") == "True"
            if state == "failed":  # failed whatever the conditions: the reason is the value
                reason = "ProgressDeadlineExceeded: " + str(
                    conds.get("Progressing", {}).get("message", "")
                )
                return Measurement(value=reason, ok=False, values={"state": state}, message=message)
            value = 1 if state == "done" and up else 0
            if state == "done" and not up:
                message = f"rolled out, but Available is not True: {conds.get('Available')}"
            return Measurement(value=value, values={"state": state}, message=message)
        labels = dep["spec"]["selector"].get("matchLabels") or {}
        pods = [p.to_dict() async for p in client.list(Pod, labels=labels)]
        when: datetime | None = None
        if since == "rollout":
            sets = [rs.to_dict() async for rs in client.list(ReplicaSet, labels=labels)]
            rev = dep["metadata"].get("annotations", {}).get(REVISION)
            hashes = {
                rs["metadata"]["labels"].get("pod-template-hash")
                for rs in sets
                if rs["metadata"].get("annotations", {}).get(REVISION) == rev
            }
            pods = [
                p
                for p in pods
                if p["metadata"].get("labels", {}).get("pod-template-hash") in hashes
            ]
        elif isinstance(since, datetime):
            when = since
        count = restarts_since(pods, when)
        scope = f" since {check.since}" if check.since else ""
        return Measurement(
            value=count,
            values={"pods": len(pods)},
            message=f"{count} container restarts{scope} over {len(pods)} pods",
        )


SOURCE = KubernetesSource()
