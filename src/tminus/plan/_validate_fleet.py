"""Validation of fleet steps (ssh, upload, release): batch and max_fail syntax, release ids
and paths, shared paths, hooks that could wait forever, and where per-host variables exist."""

from __future__ import annotations

import re

from tminus.plan._validate_base import _Collector
from tminus.plan.paths import literal_dotdot
from tminus.plan.problems import Loc
from tminus.plan.steps import (
    FLEET_HOOK_VARIABLES,
    FLEET_HOST_VARIABLES,
    ApproveStep,
    ReleaseStep,
    SshStep,
    UploadStep,
    WaitStep,
    batch_problem,
    max_fail_problem,
)
from tminus.plan.walk import StepSite

_FLEET = (SshStep, UploadStep, ReleaseStep)
_RELEASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


def _fleet(steps: list[StepSite], c: _Collector) -> None:
    """ssh, upload and release: batch and max_fail syntax, release ids and paths, shared
    paths, hooks that could wait forever."""
    for site in steps:
        s, p = site.step, site.path
        if not isinstance(s, _FLEET):
            continue
        bad = batch_problem(s.batch)
        if bad:
            c.add(
                "error",
                "bad-batch",
                bad,
                (*p, "batch"),
                "a count (2), a percentage ('25%') or a ramp ([1, 5, '25%'])",
            )
        bad = max_fail_problem(s.max_fail)
        if bad:
            c.add(
                "error",
                "bad-max-fail",
                bad,
                (*p, "max_fail"),
                "a count of hosts (0: any failure fails) or a percentage ('10%')",
            )
        if s.max_fail_per_batch is not None:
            bad = max_fail_problem(s.max_fail_per_batch, "max_fail_per_batch")
            if bad:
                c.add(
                    "error",
                    "bad-max-fail",
                    bad,
                    (*p, "max_fail_per_batch"),
                    "a count of hosts per batch (0: any failure) or a percentage ('10%')",
                )
        if s.on == "${host}" and not (len(p) >= 2 and p[-2] in ("before_batch", "after_batch")):
            c.add(
                "error",
                "host-outside-hook",
                "on: ${host} means each host of a batch: only a before_batch/after_batch hook "
                "has one",
                (*p, "on"),
                "name a host or group",
            )
        if isinstance(s, SshStep) and s.run_once and s.batch is not None:
            c.add(
                "warning",
                "run-once-batch",
                "run_once runs on one host: 'batch' has no effect",
                (*p, "batch"),
            )
        for field, value in (
            ("dest", getattr(s, "dest", None)),
            ("path", getattr(s, "path", None)),
        ):
            if isinstance(s, UploadStep | ReleaseStep) and value and literal_dotdot(value):
                c.add(
                    "error",
                    "path-escapes-root",
                    f"{s.kind} {field} '{value}' has a '..' component: it could lead outside "
                    "the directory it names",
                    (*p, field),
                    "write the path without '..' (e.g. /srv/app/shared, not /srv/app/current/..)",
                )
        if isinstance(s, ReleaseStep):
            if s.release_id and "${" not in s.release_id and not _RELEASE_ID.match(s.release_id):
                c.add(
                    "error",
                    "bad-release-id",
                    f"release id '{s.release_id}' is not a valid directory name",
                    (*p, "release_id"),
                    "use letters, digits, '.', '_', '+' and '-'",
                )
            if "${" not in s.path and not s.path.startswith("/"):
                c.add(
                    "error",
                    "relative-release-path",
                    f"release path '{s.path}' is not absolute",
                    (*p, "path"),
                    "give the deploy root as an absolute path, e.g. /srv/app",
                )
            for k, entry in enumerate(s.shared):
                e = entry.rstrip("/")
                if not e or e.startswith("/") or ".." in e.split("/"):
                    c.add(
                        "error",
                        "bad-shared-path",
                        f"shared path '{entry}' must be relative to the release, without '..'",
                        (*p, "shared", k),
                    )
        for hook in ("before_batch", "after_batch"):
            for k, h in enumerate(getattr(s, hook, []) or []):
                if isinstance(h, ApproveStep | WaitStep) and not (
                    isinstance(h, WaitStep) and h.until is None
                ):
                    c.add(
                        "warning" if isinstance(h, WaitStep) else "error",
                        "hook-waits",
                        f"a {h.kind} step in {hook} "
                        + (
                            "cannot wait for an approval"
                            if isinstance(h, ApproveStep)
                            else "polls a check between batches"
                        ),
                        (*p, hook, k),
                        "use a check step (http, ssh) or a fixed wait in hooks",
                    )


def _fleet_scopes(steps: list[StepSite]) -> dict[Loc, set[str]]:
    """YAML paths under which per-host (and per-batch) variables exist."""
    scopes: dict[Loc, set[str]] = {}
    for site in steps:
        if isinstance(site.step, _FLEET):
            scopes[site.path] = set(FLEET_HOST_VARIABLES)
            for hook in ("before_batch", "after_batch"):
                for k in range(len(getattr(site.step, hook, []) or [])):
                    scopes[(*site.path, hook, k)] = set(FLEET_HOST_VARIABLES) | set(
                        FLEET_HOOK_VARIABLES
                    )
    return scopes
