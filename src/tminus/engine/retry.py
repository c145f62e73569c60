"""``tminus resume DEPLOY --retry-failed-hosts``: finish, within the same deploy, the hosts that a
fleet step's ``max_fail`` tolerated as failed.

Each fleet step that succeeded with failed hosts is run again, in plan order, only on those
hosts (and on hosts a later step skipped because they had failed earlier, once that earlier
failure is cleared): the step kind runs as in a normal run (batches of the step's ``batch``,
``before_batch``/``after_batch`` hooks, the switch-back of a host that fails its check), with
the step's own key, so its ``host.result`` events, process records and release id are the
step's. Then each phase that had a step retried runs its ``verify`` checks again.

What does not apply in a retry: the step's stop rules (``max_fail``, ``max_fail_per_batch``,
the first-batch canary). The hosts retried were already tolerated as failed; one that fails
again stays failed, and the retry goes on with the next (a fatal problem, a host key, still
stops it; the hosts not reached keep their failure). The step's state is not changed: it
succeeded; its artifacts' per-host records are updated (a host that now succeeds is ``ok``,
one that fails again keeps ``failed`` with the new error), its other artifacts are kept.

The deploy is *running* while it retries (under its lock, with a heartbeat, so ``status`` and
the lock's holder check see a live runner); afterwards it goes back to the state it had
(succeeded, paused or scheduled; its end time and due time unchanged). ``hosts.retry_started``
and ``hosts.retry_finished`` bracket the retry in the log; a runner that dies between them
leaves the deploy *running* (shown *crashed*), and ``tminus resume`` finishes the retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from tminus import faults
from tminus.states import DeployState
from tminus.steps.base import History, natural_key
from tminus.steps.registry import is_fleet_kind, kind_of

if TYPE_CHECKING:
    from tminus.engine.engine import Engine
    from tminus.steps.base import Fleet

__all__ = ["RetryReport", "pending_retry", "retry_failed_hosts", "retry_targets"]

_EARLIER = "failed earlier in "


@dataclass
class RetryReport:
    """What a retry did: per step key, the hosts now ok and those still failed."""

    now_ok: dict[str, list[str]] = field(default_factory=dict)
    still_failed: dict[str, dict[str, str]] = field(default_factory=dict)
    verify_failed: list[str] = field(default_factory=list)
    stopped: str | None = None  # why the retry stopped early (an abort, work not stopped)

    @property
    def ok(self) -> bool:
        return not self.still_failed and not self.verify_failed and self.stopped is None


class _OtherHostsDone:
    """The deploy's fleet, except that its event log also says every host *not* being retried
    is done in the step retried: the step's rollout then touches only the hosts retried. Hooks
    (which ignore earlier results) and everything else see the fleet unchanged."""

    def __init__(self, fleet: Fleet, key: str, retried: set[str]) -> None:
        self._fleet = fleet
        self._key = key
        self._retried = retried

    def events(self) -> list[dict[str, Any]]:
        real = self._fleet.events() if self._fleet.events is not None else []
        others = (set(self._fleet.inventory.hosts) | {"localhost"}) - self._retried
        done = [
            {
                "type": "host.result",
                "key": self._key,
                "data": {"step": self._key, "host": h, "status": "ok"},
            }
            for h in sorted(others)
        ]
        return [*real, *done]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fleet, name)


def retry_targets(
    row: dict[str, Any], key: str, history: History, run_once: bool
) -> tuple[list[str], dict[str, str]]:
    """The hosts of one fleet step to run again: those that failed it (the step succeeded, so
    they were tolerated), and those it skipped because they had failed an earlier step whose
    failure is now cleared (not for a ``run_once`` step: it ran once). Also the hosts left
    out, with why (excluded by an operator)."""
    hosts = (row.get("artifacts") or {}).get("hosts")
    if not isinstance(hosts, dict):
        return [], {}
    still_out = history.failed_before(key)
    out: list[str] = []
    left: dict[str, str] = {}
    for h, rec in hosts.items():
        if not isinstance(rec, dict):
            continue
        status = rec.get("status")
        wanted = status == "failed" or (
            status == "skipped"
            and not run_once
            and str(rec.get("error") or "").startswith(_EARLIER)
            and h not in still_out
        )
        if not wanted:
            continue
        if h in history.excluded:
            left[h] = f"excluded by {history.excluded[h]}"
            continue
        out.append(h)
    return sorted(out, key=natural_key), left


def _merge(old: dict[str, Any], new: dict[str, Any], retried: list[str]) -> dict[str, Any]:
    """The step's artifacts after a retry: per-host records of the hosts retried replaced by
    what the retry found (a host it did not reach keeps its record), counts recomputed,
    ``switched``/``switched_back`` lists updated for those hosts; everything else kept."""
    merged = dict(old)
    hosts = dict(old.get("hosts") or {})
    fresh = new.get("hosts") or {}
    for h in retried:
        rec = fresh.get(h)
        if not isinstance(rec, dict):
            continue
        status = rec.get("status")
        error = str(rec.get("error") or "")
        if status in ("ok", "failed") or (status == "skipped" and error.startswith(_EARLIER)):
            hosts[h] = rec
    merged["hosts"] = hosts
    for s in ("ok", "failed", "skipped", "excluded"):
        merged[s] = sum(1 for r in hosts.values() if isinstance(r, dict) and r.get("status") == s)
    for name in ("switched", "switched_back"):
        if name in old or name in new:
            kept = [h for h in old.get(name) or [] if h not in retried]
            merged[name] = kept + [h for h in new.get(name) or [] if h in retried]
    return merged


def pending_retry(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The data of a ``hosts.retry_started`` with no ``hosts.retry_finished`` after it (its
    runner died), or None."""
    started: dict[str, Any] | None = None
    for e in events:
        if e["type"] == "hosts.retry_started":
            started = dict(e.get("data") or {})
        elif e["type"] == "hosts.retry_finished":
            started = None
    return started


async def retry_failed_hosts(
    engine: Engine, prior: dict[str, Any], forced: list[str]
) -> tuple[DeployState, RetryReport]:
    """Run the retry as the deploy's runner (the caller holds the lock). ``prior``: the
    deploy's state, reason, due and end times to go back to (from the deploy row, or from the
    ``hosts.retry_started`` event of a retry whose runner died)."""
    report = RetryReport()

    async def go() -> DeployState:
        await _retry(engine, prior, forced, report)
        return DeployState(prior["state"])

    state = await engine._as_runner(go())
    return state, report


async def _retry(
    engine: Engine, prior: dict[str, Any], forced: list[str], report: RetryReport
) -> None:
    store, deploy_id = engine.store, engine.deploy_id
    store.set_runner(deploy_id)
    engine._event(
        "hosts.retry_started",
        f"{engine.operator} retries the failed hosts"
        + (f" (forced: {'; '.join(forced)})" if forced else ""),
        {**prior, "by": engine.operator, "forced": forced},
    )
    engine._set_state(DeployState.RUNNING, "retrying the hosts that failed")
    retried_phases: list[int] = []
    for node in engine.program:
        if node.kind != "step":
            continue
        row = store.step_rows(deploy_id).get(node.key)
        if row is None or not is_fleet_kind(row["kind"]):
            continue
        if row["state"] not in ("succeeded", "warned"):
            continue
        step = engine._step_of(node)
        history = History.read(engine.fleet)
        hosts, left = retry_targets(row, node.key, history, bool(getattr(step, "run_once", False)))
        title = engine._text(node.title)
        for h, why in left.items():
            engine.reporter.line(f"{title}: {h} is not retried: {why}")
        if not hosts:
            continue
        if store.abort_requested(deploy_id):
            report.stopped = "an abort was requested"
            break
        if node.phase not in retried_phases:
            retried_phases.append(node.phase)
        stop = await _retry_step(engine, node.key, node.phase, step, row, hosts, report)
        if stop is not None:
            report.stopped = stop
            break
    if report.stopped is None:
        for p in retried_phases:
            await _verify_again(engine, p, report)
    _finish(engine, prior, report)


async def _retry_step(
    engine: Engine,
    key: str,
    phase: int,
    step: Any,
    row: dict[str, Any],
    hosts: list[str],
    report: RetryReport,
) -> str | None:
    """Run one step again on ``hosts``; merge what it found into the step's record. Returns
    why the retry must stop (the work was aborted or not confirmed stopped), or None."""
    kind = kind_of(step)
    fields = type(step).model_fields
    relax = {"max_fail": "100%", "max_fail_per_batch": None, "first_batch_canary": False}
    relaxed = step.model_copy(update={k: v for k, v in relax.items() if k in fields})
    ctx = engine._ctx(key, phase)
    # stands in for the fleet (it delegates all but its event log to the deploy's)
    ctx.services.fleet = cast("Fleet", _OtherHostsDone(engine.fleet, key, set(hosts)))
    title = engine._title(step)
    engine.reporter.step(f"{title}: retry on {' '.join(hosts)}")
    engine._event(
        "hosts.retry_step", f"{title}: retrying {', '.join(hosts)}", {"hosts": hosts}, key=key
    )
    engine._current_key = key
    faults.effect_started(key)
    outcome = await engine._supervise(kind.execute(relaxed, ctx), step, None, watch_abort=True)
    if engine._interrupted is None:
        faults.effect_done(key, outcome.ok)
    merged = _merge(row["artifacts"] or {}, outcome.artifacts or {}, hosts)
    _record(engine, key, row, merged, outcome.output, hosts, report)
    faults.recorded(key)
    if engine._interrupted is not None:
        return outcome.error or "the retry was stopped"
    return None


def _record(
    engine: Engine,
    key: str,
    row: dict[str, Any],
    merged: dict[str, Any],
    output: str,
    hosts: list[str],
    report: RetryReport,
) -> None:
    now_ok = [h for h in hosts if merged["hosts"].get(h, {}).get("status") == "ok"]
    failed = {
        h: str(merged["hosts"][h].get("error") or "failed")
        for h in hosts
        if merged["hosts"].get(h, {}).get("status") != "ok"
    }
    if now_ok:
        report.now_ok[key] = now_ok
    if failed:
        report.still_failed[key] = failed
    text = engine._mask(
        (row.get("output") or "") + "\n--- retry of failed hosts ---\n" + (output or "")
    )[-20000:]
    engine.store.step_finished(
        engine.deploy_id,
        key,
        state=row["state"],
        output=text,
        error=None,
        artifacts=engine.resolver.masker.mask_data(merged),
        event_data={"retry": True, "now_ok": now_ok, "still_failed": sorted(failed)},
    )
    engine._artifacts_cache = None
    for h in now_ok:
        engine.reporter.result(True, f"{h}: now ok")
    for h, err in failed.items():
        engine.reporter.result(False, f"{h}: still failed: {err}")


async def _verify_again(engine: Engine, phase: int, report: RetryReport) -> None:
    """A phase's ``verify`` checks, once its hosts were retried (as after the phase in a
    normal run). A failure is reported; the deploy is not rolled back (``tminus rollback``)."""
    from tminus.engine.specs import _jsonable

    for j, ref in enumerate(engine.plan.phases[phase].verify):
        result = await engine.run_check(ref)
        engine.reporter.step(f"verify again: {result.name}")
        engine.reporter.result(result.passed, result.message)
        engine._event(
            "hosts.retry_verify",
            f"{result.name}: {result.status}: {result.message}",
            {
                "phase": phase + 1,
                "check": j,
                "status": result.status,
                "value": _jsonable(result.value),
            },
        )
        if not result.passed:
            report.verify_failed.append(
                f"verify '{result.name}' of phase {phase + 1} {result.status}: {result.message}"
            )


def _finish(engine: Engine, prior: dict[str, Any], report: RetryReport) -> None:
    """Record the outcome and put the deploy back in the state it had."""
    from datetime import datetime

    def when(value: Any) -> Any:
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    engine._event(
        "hosts.retry_finished",
        describe(report),
        {
            "now_ok": report.now_ok,
            "still_failed": report.still_failed,
            "verify_failed": report.verify_failed,
            "stopped": report.stopped,
        },
    )
    if engine.store.abort_requested(engine.deploy_id):
        # An abort stops the retry, not the deploy (it ended, or waits, as before).
        engine.store.set_deploy(engine.deploy_id, abort_requested=None)
    state = DeployState(prior["state"])
    engine._set_state(
        state,
        prior.get("reason"),
        finished_at=when(prior.get("finished_at")),
        due_at=when(prior.get("due_at")),
    )
    if state in (DeployState.SUCCEEDED, DeployState.SCHEDULED):
        engine._release_lock()


def describe(report: RetryReport) -> str:
    """One line: what the retry finished and what is still failed."""
    ok = sorted({h for hs in report.now_ok.values() for h in hs}, key=natural_key)
    bad = sorted({h for hs in report.still_failed.values() for h in hs}, key=natural_key)
    parts = [f"{len(ok)} host(s) now ok" + (f" ({', '.join(ok)})" if ok else "")]
    if bad:
        errors = "; ".join(
            f"{h} in {k}: {e}" for k, hs in report.still_failed.items() for h, e in hs.items()
        )
        parts.append(f"{len(bad)} still failed: {errors}")
    parts += report.verify_failed
    if report.stopped:
        parts.append(f"the retry stopped: {report.stopped}")
    return "retry of failed hosts: " + "; ".join(parts)
