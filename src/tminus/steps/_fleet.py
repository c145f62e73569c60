"""What the fleet steps (``ssh``, ``upload``, ``release``) share: the hosts of ``on:`` in
rolling batches, ``max_fail`` counted over the whole step, the step's ``timeout`` and
``retries`` applied per host, ``before_batch``/``after_batch`` hooks, ``run_once``, host
exclusions, and one ``host.result`` event per host (stdout, stderr, exit status; masked by the
engine).

The semantics, written down in docs/fleet.md:

- Hosts are taken in natural order (``h2`` before ``h10``). A batch's hosts run at once, at
  most ``targets.ssh.forks`` at a time; batch *k+1* starts when batch *k* (and its hooks)
  is done.
- ``max_fail`` is counted over the whole step, across batches: a count, or a percentage of
  the step's hosts (excluded ones not counted) rounded down. When the failures exceed it, the
  step stops before its next batch and fails. ``0`` (the default): any failure fails. A step
  where every host that ran failed fails whatever ``max_fail`` says.
- ``max_fail_per_batch`` (Ansible's ``max_fail_percentage``) is counted per batch: a count or
  a percentage of the batch. The first batch is a canary (``first_batch_canary``, default
  true): when more batches follow, any failure in it stops the step.
- A host that went through every phase but fails an ``after_batch`` check gets the kind's
  ``revert`` (a release switches ``current`` back and marks the release ``BAD_RELEASE``).
- A host that failed a fleet step whose failures were tolerated is out of the rollout: later
  fleet steps of the deploy skip it (as Ansible drops failed hosts from a play). Rollback
  actions still consider it.
- Hosts excluded by the operator (``tminus resume --exclude-host``) are left alone by every
  later fleet step, rollback included. A retried step skips the hosts it already finished.

The code: per-host results and history in :mod:`tminus.steps._fleet_results`, one execution
batch by batch in :mod:`tminus.steps._fleet_batches`, the host-key preflight in
:mod:`tminus.steps._fleet_keys`; this module holds :func:`rollout` and the helpers the kinds
call, and re-exports the rest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tminus.errors import TminusError
from tminus.plan.interpolate import ResolveError
from tminus.plan.steps import batch_sizes, tolerated_failures
from tminus.steps._fleet_batches import _Batch, _Run, run_substep
from tminus.steps._fleet_keys import host_key_problems
from tminus.steps._fleet_results import (
    HOOK_VARIABLES,
    HOST_VARIABLES,
    TAIL,
    History,
    HostResult,
    HostWork,
    natural_key,
    scoped,
    tail,
)
from tminus.steps.base import StepContext, StepOutcome

if TYPE_CHECKING:
    from tminus.hosts.fleet import Fleet

__all__ = [
    "HOOK_VARIABLES",
    "HOST_VARIABLES",
    "TAIL",
    "History",
    "HostResult",
    "HostWork",
    "check_on",
    "failed_outcome",
    "host_key_problems",
    "natural_key",
    "now_stamp",
    "rollout",
    "run_substep",
    "scoped",
    "tail",
    "target",
]


async def rollout(
    ctx: StepContext,
    step: Any,
    phases: Sequence[HostWork],
    *,
    artifacts: dict[str, Any] | None = None,
    hosts: list[str] | None = None,
    host_data: dict[str, Any] | None = None,
    revert: HostWork | None = None,
) -> tuple[StepOutcome, dict[str, HostResult]]:
    """Run ``phases`` (e.g. stage, then switch) on the hosts of ``step.on`` in batches.
    Within a batch every phase runs on all its hosts before the next phase; a host that fails
    a phase goes no further. A host that went through every phase but then fails an
    after_batch check gets ``revert`` (a release switches back). ``host_data`` is added to
    every host's recorded result. Returns the outcome and every host's result."""
    run = _Run(ctx, step, phases, host_data, revert)
    history = History.read(run.fleet)
    names = (
        hosts if hosts is not None else sorted(run.fleet.names(target(step, ctx)), key=natural_key)
    )
    rolling_back = ctx.key.startswith("rollback/")
    done = set() if run.hook else history.ok_in(ctx.key)
    before = {} if (run.hook or rolling_back) else history.failed_before(ctx.key)
    targets: list[str] = []
    for n in names:
        if n in history.excluded:
            run.results[n] = HostResult(n, "excluded", error=f"excluded by {history.excluded[n]}")
        elif n in done:
            run.results[n] = HostResult(n, "ok", data={"earlier": True})
        elif n in before:
            run.results[n] = HostResult(n, "skipped", error=f"failed earlier in {before[n]}")
        else:
            targets.append(n)
    counted = len([n for n in names if n not in history.excluded])
    tolerated = tolerated_failures(step.max_fail, counted)
    stop: str | None = None
    ran: list[str] = []
    if getattr(step, "run_once", False) and targets:
        if done & set(names):
            for n in targets:
                run.results[n] = HostResult(n, "skipped", error="run_once: ran earlier")
            targets = []
        else:
            chosen, unreachable = await run.pick_once(targets)
            for n in targets:
                if n != chosen:
                    why = f"unreachable: {unreachable[n]}" if n in unreachable else "run_once"
                    run.results[n] = HostResult(n, "skipped", error=why)
            if chosen is None:
                stop = f"run_once: no host of '{step.on}' is reachable"
                targets = []
            else:
                targets = [chosen]
                tolerated = 0
    sizes = batch_sizes(step.batch, len(targets))
    batches: list[_Batch] = []
    k = 0
    for i, size in enumerate(sizes, 1):
        batches.append(_Batch(i, targets[k : k + size]))
        k += size
    for b, batch in enumerate(batches):
        if stop is not None:
            for h in batch.hosts:
                run.emit(
                    HostResult(h, "skipped", error="not run: the step stopped", batch=batch.index)
                )
            continue
        ran += batch.hosts
        stop = await run.run_batch(batch, tolerated, last=b == len(batches) - 1)
    results = {n: run.results[n] for n in names if n in run.results}
    counts = {s: 0 for s in ("ok", "failed", "skipped", "excluded")}
    for r in results.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    arts: dict[str, Any] = {
        "hosts": {n: r.record() for n, r in results.items()},
        **counts,
        "batches": [b.hosts for b in batches],
        **(artifacts or {}),
    }
    ok_ran = [h for h in ran if results[h].ok]
    if stop is None and ran and not ok_ran and run.failures:
        stop = f"every host failed ({len(ran)})"
    lines = [r.summary() for r in results.values()]
    if not names:
        lines.append(f"no hosts in '{step.on}'")
    else:
        shown = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        lines.append(f"{len(names)} host(s): {shown}")
    output = "\n".join(lines)
    if stop is not None:
        failed = [r for r in results.values() if r.status == "failed"]
        detail = "; ".join(f"{r.host}: {r.error or 'exit ' + str(r.exit)}" for r in failed[:5])
        more = f" (+{len(failed) - 5} more)" if len(failed) > 5 else ""
        error = stop + (f" — {detail}{more}" if detail and detail not in stop else "")
        return StepOutcome(False, output, ctx.resolver.mask(error), arts), results
    return StepOutcome(True, output, None, arts), results


def target(step: Any, ctx: StepContext) -> str:
    """``on:``: a host or group; ``${host}`` (in a before_batch/after_batch hook) is the host
    of the batch the hook runs for. Raises ResolveError outside a hook."""
    on = str(step.on)
    return ctx.resolver.resolve(on) if "${" in on else on


def check_on(step: Any, ctx: StepContext) -> str | None:
    """A problem with ``on:`` that fails the step before any host is touched."""
    fleet: Fleet = ctx.services.fleet
    try:
        fleet.names(target(step, ctx))
    except ResolveError as exc:
        return f"on: {exc}"
    except TminusError as exc:
        return str(exc)
    return None


def failed_outcome(error: str, ctx: StepContext) -> StepOutcome:
    return StepOutcome(False, error=ctx.resolver.mask(error))


def now_stamp() -> str:
    """A Capistrano release id: the UTC time, YYYYmmddHHMMSS."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime())
