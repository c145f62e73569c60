"""Fixtures of the Kubernetes tests: the **stand-in** API server (tminus.testing.kubeapi; no
cluster can run on these machines, issue #19) with a kubeconfig in the test's directory."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Tm
from tminus.testing.kubeapi import KubeApi

#: progressDeadlineSeconds 600 → 3 s on the stand-in.
DEADLINE_SCALE = 0.005


class _PatientTm(Tm):
    """`Tm` with a 10-minute limit per command: a run of several steps, each importing the
    client, took over 2 minutes on a shared machine at load average 130."""

    def __call__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 600,
        check: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return super().__call__(*args, env=env, timeout=timeout, check=check)


@pytest.fixture
def tm(tmp_path: Path) -> Tm:
    return _PatientTm(tmp_path)


@pytest.fixture
def kube(tm: Tm) -> Iterator[KubeApi]:
    """The stand-in API server with Deployment ``api`` (container ``api``, image ``api:1``,
    env ``MODE=old``, 2 replicas), its kubeconfig at ``kubeconfig`` in the test directory."""
    with KubeApi(deadline_scale=DEADLINE_SCALE) as api:
        api.add_deployment("api", {"api": "api:1"}, env={"api": {"MODE": "old"}})
        api.write_kubeconfig(tm.cwd / "kubeconfig")
        yield api


def plan(tm: Tm, steps: list[dict[str, Any]], **extra: Any) -> Path:
    """A plan with the stand-in as `targets.kubernetes.k8s` and ``steps`` in one phase."""
    data: dict[str, Any] = {
        "tminus": 1,
        "name": "kube",
        "environment": "test",
        "secrets": {"api_token": "${env:API_TOKEN:-}"},
        "targets": {"kubernetes": {"k8s": {"kubeconfig": "kubeconfig"}}},
        "phases": [{"name": "deploy", "steps": steps}],
        **extra,
    }
    path = tm.cwd / "p.yaml"
    path.write_text(json.dumps(data, indent=1))
    return path


def step(action: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "kubernetes", "target": "k8s", "deployment": "api", "action": action, **fields}
