"""The ``kubernetes`` step kind: one action on a Deployment (docs/kubernetes.md).

Besides the model, the pure parts shared by the runbook, the dry run, the step and the check
source (no client library here): the exact patch of each action (:func:`kube_patch`), its one
description (:func:`describe_kubernetes`), the rollout rule (:func:`rollout_state`,
``kubectl rollout status``'s reading of a Deployment's status) and the runbook's manual
fallback (:func:`kubectl_fallback`).
"""

import json
import shlex
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from tminus.plan._base import Name
from tminus.plan._runbook_text import Code, Text, txt
from tminus.plan._step_base import StepBase

from ._base import new_dict

__all__ = [
    "KUBE_ACTIONS",
    "RESTARTED_AT",
    "REVISION",
    "KubernetesStep",
    "PatchType",
    "describe_kubernetes",
    "kube_patch",
    "kubectl_fallback",
    "rollout_state",
]

KubeAction = Literal["set_image", "set_env", "rollout_status", "restart", "scale", "undo"]
KUBE_ACTIONS: tuple[str, ...] = KubeAction.__args__  # type: ignore[attr-defined]
#: What a patch is sent as (its Content-Type): strategic merge, JSON merge, JSON patch.
PatchType = Literal["strategic", "merge", "json"]
CONTENT_TYPES: dict[str, str] = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}
#: The annotation ``kubectl rollout restart`` sets on the pod template.
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
#: The revision annotation of a Deployment and its ReplicaSets.
REVISION = "deployment.kubernetes.io/revision"

#: action → the fields it uses (besides target, deployment); any other one is rejected.
_FIELDS: dict[str, set[str]] = {
    "set_image": {"containers", "wait"},
    "set_env": {"container", "env", "wait"},
    "rollout_status": set(),
    "restart": {"wait"},
    "scale": {"replicas", "wait"},
    "undo": {"to_revision", "wait"},
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "set_image": ("containers",),
    "set_env": ("container", "env"),
    "scale": ("replicas",),
}
_ACTION_FIELDS = {"containers", "container", "env", "replicas", "to_revision", "wait"}


def _set(value: Any) -> bool:
    """Is an action field set to something (``replicas: 0`` is; ``wait: false`` is not)?"""
    return value is not None and value is not False and value != {}


class KubernetesStep(StepBase):
    """One action on a Deployment of a ``targets.kubernetes`` cluster: set images or env,
    wait for the rollout, restart, scale, or undo to a recorded revision."""

    kind: Literal["kubernetes"]
    target: Name = Field(description="A `targets.kubernetes` entry.")
    deployment: str = Field(description="The Deployment's name (``${…}`` allowed).")
    action: KubeAction | None = Field(
        None,
        description="set_image, set_env, rollout_status, restart, scale or undo.",
    )
    containers: dict[str, str] = Field(
        default_factory=new_dict, description="set_image: container name → image."
    )
    container: str | None = Field(None, description="set_env: the container whose env is set.")
    env: dict[str, str] = Field(
        default_factory=new_dict, description="set_env: NAME → value (secrets allowed, masked)."
    )
    replicas: int | None = Field(None, ge=0, description="scale: the number of replicas.")
    to_revision: int | None = Field(
        None, ge=1, description="undo: the revision to go back to; default: the previous one."
    )
    wait: bool = Field(
        False, description="After the change, wait for the rollout like rollout_status."
    )
    restore: str | None = Field(
        None,
        description="Written by tminus in the undo it registers, never in a plan: put the "
        "Deployment back as the step with this key recorded it before its change.",
    )

    @model_validator(mode="after")
    def _fields_of_action(self) -> "KubernetesStep":
        # set to something (a spec read back has every field: ``wait: false``, ``env: {}``)
        given = {f for f in _ACTION_FIELDS if _set(getattr(self, f))}
        if self.restore is not None:
            if self.action is not None or given:
                raise ValueError("a restore step takes no action nor action fields")
            return self
        if self.action is None:
            raise ValueError("a kubernetes step needs 'action' (" + ", ".join(KUBE_ACTIONS) + ")")
        extra = sorted(given - _FIELDS[self.action])
        if extra:
            raise ValueError(
                f"action {self.action} does not use {', '.join(extra)} (it would have no effect)"
            )
        for name in _REQUIRED.get(self.action, ()):
            if not _set(getattr(self, name)):
                raise ValueError(f"action {self.action} needs '{name}'")
        return self

    @property
    def waits(self) -> bool:
        """Does the step wait for the rollout (rollout_status, or ``wait: true``)?"""
        return self.action == "rollout_status" or self.wait

    def default_title(self) -> str:
        if self.restore is not None:
            return f"Restore deployment {self.deployment} as recorded before {self.restore}"
        words = {
            "set_image": "set image of",
            "set_env": "set env of",
            "rollout_status": "wait for the rollout of",
            "restart": "restart",
            "scale": "scale",
            "undo": "undo the rollout of",
        }
        return f"Kubernetes: {words[self.action or 'rollout_status']} {self.deployment}"


def kube_patch(
    step: KubernetesStep, value: Callable[[str], str], now: str = "<now>"
) -> tuple[PatchType, Any] | None:
    """The patch an action sends (its type and body), each value shown by ``value``; None for
    the actions whose patch depends on the cluster (rollout_status, undo, restore)."""
    if step.action == "set_image":
        containers = [{"name": n, "image": value(i)} for n, i in step.containers.items()]
        return "strategic", {"spec": {"template": {"spec": {"containers": containers}}}}
    if step.action == "set_env":
        env = [{"name": n, "value": value(v)} for n, v in step.env.items()]
        container = {"name": value(step.container or ""), "env": env}
        return "strategic", {"spec": {"template": {"spec": {"containers": [container]}}}}
    if step.action == "restart":
        meta = {"annotations": {RESTARTED_AT: now}}
        return "strategic", {"spec": {"template": {"metadata": meta}}}
    if step.action == "scale":
        return "merge", {"spec": {"replicas": step.replicas}}
    return None


def patch_json(body: Any) -> str:
    """A patch as shown (one line, keys in order)."""
    return json.dumps(body, ensure_ascii=False)


def describe_kubernetes(s: KubernetesStep, show: Any) -> Text:
    """The step's one description (``show`` a :class:`tminus.plan.describe.Show`)."""
    where = txt("Deployment ", Code(show.value(s.deployment)), " on ", Code(s.target))
    if s.restore is not None:
        return txt(
            where,
            ": back to the pod template and replicas recorded before ",
            Code(s.restore),
            " (JSON patch of /spec/template or the scale subresource), then wait for the rollout",
        )
    then = ", then wait for the rollout" if s.wait else ""
    if s.action == "rollout_status":
        return txt(
            where,
            ": wait until the new ReplicaSet is available (fail at progressDeadlineSeconds)",
        )
    if s.action == "undo":
        to = f"revision {s.to_revision}" if s.to_revision else "the previous revision"
        return txt(
            where,
            f": roll back to {to} (JSON patch of /spec/template with that ReplicaSet's)",
            then,
        )
    made = kube_patch(s, show.value, now="<now, RFC 3339>")
    assert made is not None
    ptype, body = made
    what = {"set_image": "set image", "set_env": "set env", "restart": "restart", "scale": "scale"}
    where_patch = " of the scale subresource" if s.action == "scale" else ""
    kind = {"strategic": "strategic merge", "merge": "JSON merge", "json": "JSON"}[ptype]
    return txt(
        where,
        f": {what[s.action or '']} — {kind} patch{where_patch} ",
        Code(patch_json(body)),
        then,
    )


RolloutState = Literal["done", "waiting", "failed"]


def rollout_state(dep: dict[str, Any]) -> tuple[RolloutState, str]:
    """Has a Deployment (the API's JSON) finished rolling out? kubectl's rule: the controller
    has seen the newest spec (observedGeneration), every replica is updated, no old replica
    is left, and every updated replica is available; a Progressing condition with reason
    ProgressDeadlineExceeded is a failure, with its message."""
    meta, spec, status = dep.get("metadata", {}), dep.get("spec", {}), dep.get("status") or {}
    name = meta.get("name", "?")
    if int(meta.get("generation") or 0) > int(status.get("observedGeneration") or 0):
        return "waiting", f"waiting for deployment {name}'s spec update to be observed"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return "failed", (
                f"deployment {name} exceeded its progress deadline "
                f"({spec.get('progressDeadlineSeconds', 600)}s): ProgressDeadlineExceeded: "
                f"{cond.get('message', '')}"
            )
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < want:
        return "waiting", f"{updated} of {want} new replicas have been updated"
    if replicas > updated:
        return "waiting", f"{replicas - updated} old replicas are pending termination"
    if available < updated:
        return "waiting", f"{available} of {updated} updated replicas are available"
    return "done", f"deployment {name} successfully rolled out ({available} available)"


def kubectl_fallback(plan: Any, s: KubernetesStep) -> list[str]:
    """The manual fallback of a step (the runbook's, :mod:`tminus.plan._runbook_fallback`):
    the ``kubectl`` commands an operator would type, values as written."""
    target = plan.targets.kubernetes.get(s.target)
    flags = []
    if target is not None and target.kubeconfig:
        flags.append(f"--kubeconfig {shlex.quote(target.kubeconfig)}")
    if target is not None and target.context:
        flags.append(f"--context {shlex.quote(target.context)}")
    if target is not None and target.namespace:
        flags.append(f"-n {target.namespace}")
    k = " ".join(["kubectl", *flags])
    dep = f"deployment/{s.deployment}"
    status = f"{k} rollout status {dep}" + (
        f" --timeout={int(s.timeout.total_seconds())}s" if s.timeout else ""
    )
    if s.restore is not None:
        return [
            f"# {dep}: put back the pod template (or replicas) recorded before {s.restore}:",
            f"{k} rollout history {dep}  # then: {k} rollout undo {dep} --to-revision=<it>",
            status,
        ]
    pairs = " ".join(shlex.quote(f"{n}={v}") for n, v in {**s.containers, **s.env}.items())
    cmd = {
        "set_image": f"{k} set image {dep} {pairs}",
        "set_env": f"{k} set env {dep} -c {s.container} {pairs}",
        "restart": f"{k} rollout restart {dep}",
        "scale": f"{k} scale {dep} --replicas={s.replicas}",
        "undo": f"{k} rollout undo {dep}"
        + (f" --to-revision={s.to_revision}" if s.to_revision else ""),
    }.get(s.action or "")
    if cmd is None:
        return [status]
    return [cmd, status] if s.wait else [cmd]
