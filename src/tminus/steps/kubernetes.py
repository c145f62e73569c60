"""``kind: kubernetes``: one action on a Deployment, through the API (lightkube), never kubectl.

Actions (docs/kubernetes.md): ``set_image`` and ``set_env`` (strategic merge patches of the
pod template, as ``kubectl set image``/``set env`` send), ``restart`` (the
``kubectl.kubernetes.io/restartedAt`` annotation of the pod template, as ``kubectl rollout
restart``), ``scale`` (a JSON merge patch of the scale subresource), ``undo`` (the pod
template of the ReplicaSet with the wanted ``deployment.kubernetes.io/revision``, put back by
a JSON patch, as ``kubectl rollout undo``) and ``rollout_status`` (wait until the new
ReplicaSet is available; a Progressing condition with reason ProgressDeadlineExceeded fails
with its message). ``wait: true`` waits after a change the same way.

The undo is recorded, like a traffic split's (:func:`tminus.steps.traffic.record_before`):
the compensation, registered before the step runs, is a ``kubernetes`` step with ``restore:
<key>``; the step, before it patches, records the Deployment as it is (pod template,
replicas, revision, images) in the state directory, once (a retry keeps the first record).
The restore puts exactly that back (the recorded pod template by a JSON patch, or the
recorded replicas by the scale subresource), waits for the rollout and checks the images.
``restart`` and ``rollout_status`` change nothing that can be put back, and register none.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from tminus.plan._steps_kube import REVISION, kube_patch
from tminus.plan.describe import describe_step, plain
from tminus.plan.interpolate import ResolveError, Resolver
from tminus.plan.model import Plan
from tminus.plan.steps import KubernetesStep
from tminus.steps._kube_client import (
    POLL_S,
    Kube,
    KubeFailed,
    check_target,
    open_kube,
    wait_rollout,
)
from tminus.steps.base import AsRun, Compensation, StepContext, StepKindBase, StepOutcome
from tminus.steps.traffic import record_before, recorded_before

__all__ = ["KIND", "KubernetesKind", "images_of"]


def images_of(template: dict[str, Any]) -> dict[str, str]:
    """container → image of a pod template."""
    return {c["name"]: c.get("image", "") for c in template.get("spec", {}).get("containers", [])}


def _fmt(images: dict[str, str]) -> str:
    return ", ".join(f"{c}={i}" for c, i in images.items()) or "no containers"


class _Masked(AsRun):
    """Values as they will run, each masked before it is placed in a patch's JSON (where an
    escaped secret would no longer match the mask)."""

    def __init__(self, resolver: Resolver) -> None:
        super().__init__(resolver)
        self._mask = resolver.mask

    def value(self, text: str) -> str:
        return self._mask(super().value(text))


class KubernetesKind(StepKindBase):
    kind: ClassVar[str] = "kubernetes"
    # Not safe to re-run blindly: an undo to "the previous revision" run twice flips back.
    rerun_safe: ClassVar[bool] = False

    def describe(self, step: KubernetesStep, resolver: Resolver) -> str:
        return resolver.mask(plain(describe_step(step, _Masked(resolver))))

    async def execute(self, step: KubernetesStep, ctx: StepContext) -> StepOutcome:
        try:
            name = ctx.resolver.resolve(step.deployment)
            async with open_kube(ctx.plan, step.target, ctx.resolver) as kube:
                if step.restore is not None:
                    return await self._restore(step, ctx, kube, name)
                if step.action == "rollout_status":
                    return await self._wait(step, ctx, kube, name, "")
                return await self._change(step, ctx, kube, name)
        except (KubeFailed, ResolveError) as exc:
            return StepOutcome(False, error=ctx.resolver.mask(str(exc)))

    async def _wait(
        self, step: KubernetesStep, ctx: StepContext, kube: Kube, name: str, done: str
    ) -> StepOutcome:
        # The engine applies the step's timeout (and an abort) by cancelling the step; the wait
        # ends a poll earlier on its own, to say what the rollout was waiting for.
        limit = max(step.timeout.total_seconds() - 2 * POLL_S, POLL_S) if step.timeout else None

        def say(message: str) -> None:
            ctx.log(f"  {message}")
            ctx.emit("kubernetes.rollout", message, {"deployment": name})

        ok, message, dep = await wait_rollout(kube, name, limit, say)
        artifacts = {
            "deployment": name,
            "namespace": kube.namespace,
            "revision": dep["metadata"].get("annotations", {}).get(REVISION),
            "images": images_of(dep["spec"]["template"]),
        }
        text = f"{done}; {message}" if done else message
        if not ok:
            return StepOutcome(False, error=ctx.resolver.mask(text), artifacts=artifacts)
        return StepOutcome(True, ctx.resolver.mask(text), artifacts=artifacts)

    async def _change(
        self, step: KubernetesStep, ctx: StepContext, kube: Kube, name: str
    ) -> StepOutcome:
        dep = await kube.deployment(name)
        template = dep["spec"]["template"]
        revision = dep["metadata"].get("annotations", {}).get(REVISION)
        before = {
            "target": step.target,
            "namespace": kube.namespace,
            "deployment": name,
            "action": step.action,
            "template": template,
            "replicas": dep["spec"].get("replicas"),
            "revision": revision,
            "images": images_of(template),
        }
        # Recorded before anything is patched: the registered restore puts back this record.
        record = record_before(ctx, before) if step.action != "restart" else before
        ctx.emit(
            "kubernetes.before",
            f"{name}: revision {record['revision']}, {_fmt(record['images'])}, "
            f"{record['replicas']} replicas",
            {k: v for k, v in record.items() if k != "template"},
        )
        if step.action == "undo":
            done = await self._undo(step, kube, name, dep)
        elif step.action == "scale":
            assert step.replicas is not None
            got = await kube.scale(name, step.replicas)
            done = f"{name}: {record['replicas']} → {got} replicas"
        else:
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            made = kube_patch(step, ctx.resolver.resolve, now=now)
            assert made is not None
            after = await kube.patch(name, *made)
            done = self._said(step, name, record, after)
        ctx.emit("kubernetes.patched", ctx.resolver.mask(done), {"deployment": name})
        if step.wait:
            return await self._wait(step, ctx, kube, name, ctx.resolver.mask(done))
        return StepOutcome(True, ctx.resolver.mask(done), artifacts={"deployment": name})

    def _said(
        self, step: KubernetesStep, name: str, record: dict[str, Any], after: dict[str, Any]
    ) -> str:
        if step.action == "set_image":
            return (
                f"{name}: {_fmt(record['images'])} → {_fmt(images_of(after['spec']['template']))}"
            )
        if step.action == "set_env":
            return f"{name}: env {', '.join(step.env)} set on container {step.container}"
        return f"{name}: restarted (pod template annotated {datetime.now(UTC):%H:%M:%S}Z)"

    async def _undo(self, step: KubernetesStep, kube: Kube, name: str, dep: dict[str, Any]) -> str:
        current = int(dep["metadata"].get("annotations", {}).get(REVISION) or 0)
        by_rev = {
            int(rs["metadata"].get("annotations", {}).get(REVISION) or 0): rs
            for rs in await kube.replicasets(dep)
        }
        if step.to_revision is not None:
            wanted: int | None = step.to_revision
        else:
            wanted = max((r for r in by_rev if 0 < r < current), default=None)
        if wanted is None or wanted not in by_rev:
            known = ", ".join(str(r) for r in sorted(by_rev)) or "none"
            raise KubeFailed(
                f"deployment {name} has no revision {wanted or 'before ' + str(current)} "
                f"to go back to (revisions: {known})"
            )
        template = dict(by_rev[wanted]["spec"]["template"])
        labels = dict(template.get("metadata", {}).get("labels") or {})
        labels.pop("pod-template-hash", None)
        template["metadata"] = {**template.get("metadata", {}), "labels": labels}
        if template == dep["spec"]["template"]:
            return f"{name}: already at the template of revision {wanted}; nothing to undo"
        await kube.patch(
            name, "json", [{"op": "replace", "path": "/spec/template", "value": template}]
        )
        return f"{name}: back to revision {wanted} ({_fmt(images_of(template))})"

    async def _restore(
        self, step: KubernetesStep, ctx: StepContext, kube: Kube, name: str
    ) -> StepOutcome:
        assert step.restore is not None
        record = recorded_before(ctx, step.restore)
        if record is None:
            return StepOutcome(
                True, f"nothing to restore: step {step.restore} never changed {name}"
            )
        name = record.get("deployment", name)
        ctx.emit(
            "kubernetes.restoring",
            f"{name}: back to {_fmt(record['images'])} as recorded before {step.restore}",
            {k: v for k, v in record.items() if k != "template"},
        )
        if record.get("action") == "scale":
            got = await kube.scale(name, int(record["replicas"]))
            done = f"{name}: back to {got} replicas"
        else:
            dep = await kube.deployment(name)
            if dep["spec"]["template"] != record["template"]:
                await kube.patch(
                    name,
                    "json",
                    [{"op": "replace", "path": "/spec/template", "value": record["template"]}],
                )
            done = f"{name}: back to {_fmt(record['images'])}"
        out = await self._wait(step, ctx, kube, name, done)
        now = images_of((await kube.deployment(name))["spec"]["template"])
        if out.ok and now != record["images"]:
            return StepOutcome(
                False, error=f"{name} runs {_fmt(now)} after restoring {_fmt(record['images'])}"
            )
        return out

    def compensation(self, step: KubernetesStep, ctx: StepContext) -> Compensation | None:
        if step.restore is not None or step.action in ("rollout_status", "restart"):
            return None
        spec: dict[str, Any] = {
            "kind": "kubernetes",
            "target": step.target,
            "deployment": step.deployment,
            "restore": ctx.key,
            "name": f"Restore deployment {step.deployment}",
            "idempotent": True,
        }
        if step.timeout is not None:
            spec["timeout"] = step.timeout
        # partial_ok: a patch may stand even if the wait after it failed.
        return Compensation(KubernetesStep.model_validate(spec), partial_ok=True)

    def preflight(
        self, step: KubernetesStep, plan: Plan, resolver: Resolver, state_dir: Path
    ) -> list[str]:
        target = plan.targets.kubernetes.get(step.target)
        if target is None:
            return []  # `tminus check` reports it
        problem = check_target(step.target, target, resolver)
        return [resolver.mask(problem)] if problem else []


KIND = KubernetesKind()
