"""`tminus check` on the kubernetes target, step kind and check source: every problem at its
file:line:col with a hint; no field without an effect. No API server is involved."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Tm

HEAD = """\
tminus: 1
name: kube
environment: test
targets:
  kubernetes:
    prod: {kubeconfig: ./kubeconfig, context: prod, namespace: shop}
"""


def _check(tm: Tm, body: str) -> tuple[int, str]:
    path: Path = tm.cwd / "p.yaml"
    path.write_text(HEAD + body)
    done = tm("check", str(path))
    return done.returncode, done.stdout + done.stderr


def test_a_good_plan_passes(tm: Tm) -> None:
    code, out = _check(
        tm,
        """\
checks:
  up: {source: kubernetes, target: prod, deployment: api, metric: available, expect: "== 1"}
phases:
  - name: deploy
    steps:
      - {kind: kubernetes, target: prod, deployment: api, action: set_image,
         containers: {api: "api:2"}, wait: true}
      - {kind: kubernetes, target: prod, deployment: api, action: rollout_status}
    verify: [up]
""",
    )
    assert code == 0, out


def test_an_unknown_target_is_an_error_at_its_place_with_a_hint(tm: Tm) -> None:
    code, out = _check(
        tm,
        """\
checks:
  up: {source: kubernetes, target: staging, deployment: api, metric: available}
phases:
  - name: deploy
    steps:
      - kind: kubernetes
        target: prdo
        deployment: api
        action: restart
    verify: [up]
""",
    )
    assert code == 2, out
    assert (
        "p.yaml:13:17: error[undefined-kubernetes-target]: undefined kubernetes target 'prdo'"
        in out
    )
    assert "did you mean 'prod'" in out
    assert (
        "p.yaml:8:36: error[undefined-kubernetes-target]: undefined kubernetes target 'staging'"
        in out
    )
    assert "define it under 'targets.kubernetes' (defined: prod)" in out


@pytest.mark.parametrize(
    ("step", "said"),
    [
        ("action: set_image, replicas: 3", "action set_image does not use replicas"),
        ("action: set_image, containers: {a: b}, replicas: 3", "does not use replicas"),
        ("action: set_env, env: {A: b}", "action set_env needs 'container'"),
        ("action: scale", "action scale needs 'replicas'"),
        ("action: rollout_status, wait: true", "does not use wait"),
        ("action: undo, to_revision: 0", "greater than or equal to 1"),
        ("action: rollback", "expected 'set_image', 'set_env', 'rollout_status', 'restart'"),
        ("containers: {a: b}", "needs 'action'"),
        ("action: set_env, container: api, env: {FLAG: false}", "Input should be a valid string"),
    ],
)
def test_fields_an_action_does_not_use_are_refused(tm: Tm, step: str, said: str) -> None:
    code, out = _check(
        tm,
        f"""\
phases:
  - name: deploy
    steps:
      - {{kind: kubernetes, target: prod, deployment: api, {step}}}
""",
    )
    assert code == 2, out
    assert said in out, out
    assert "p.yaml:10:" in out, out


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("{kubeconfig: ./k, in_cluster: true}", "needs 'kubeconfig' or 'in_cluster: true' (one)"),
        ("{context: prod}", "needs 'kubeconfig' or 'in_cluster: true' (one)"),
        ("{in_cluster: true, context: prod}", "'context' names a kubeconfig context"),
        ("{kubeconfig: ./k, namespace: Shop_1}", "'Shop_1' is not a valid name"),
    ],
)
def test_a_target_needs_one_way_in(tm: Tm, target: str, said: str) -> None:
    path: Path = tm.cwd / "p.yaml"
    path.write_text(
        HEAD.replace("{kubeconfig: ./kubeconfig, context: prod, namespace: shop}", target)
        + "phases: [{name: p, steps: [{kind: wait, duration: 1s}]}]\n"
    )
    done = tm("check", str(path))
    assert done.returncode == 2 and said in done.stdout + done.stderr, done.stderr
    assert "p.yaml:6:" in done.stderr


def test_since_is_only_for_pod_restarts(tm: Tm) -> None:
    code, out = _check(
        tm,
        """\
checks:
  ready: {source: kubernetes, target: prod, deployment: api, metric: ready_replicas,
          since: rollout}
phases: [{name: p, steps: [{kind: wait, duration: 1s}]}]
""",
    )
    assert code == 2 and "'since' is for metric pod_restarts" in out, out
