"""One execution of a fleet step, batch by batch (used by :func:`tminus.steps._fleet.rollout`):
each host's phases with the step's retries and timeout, the ``before_batch``/``after_batch``
hooks (run as sub-steps), the ``max_fail``/``max_fail_per_batch``/canary limits, the revert of
hosts that fail an after-batch check, and ``run_once``'s choice of a reachable host."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tminus.hosts.base import Host
from tminus.plan.interpolate import ResolveError, Resolver, references
from tminus.plan.steps import StepBase, tolerated_failures
from tminus.steps._fleet_results import HOST_VARIABLES, HostResult, HostWork, scoped
from tminus.steps.base import StepContext, StepOutcome

if TYPE_CHECKING:
    from tminus.hosts.fleet import Fleet

__all__ = ["run_substep"]


@dataclass
class _Batch:
    index: int
    hosts: list[str]


def _retry_policy(step: StepBase) -> tuple[int, float, float, float]:
    r = step.retries
    if r is None:
        return 1, 0.0, 1.0, 0.0
    return r.attempts, r.delay.total_seconds(), r.backoff, r.max_delay.total_seconds()


async def _attempts(
    name: str,
    host: Host,
    resolver: Resolver,
    work: HostWork,
    step: StepBase,
    ctx: StepContext,
) -> HostResult:
    """``work`` with the step's retries and timeout, for one host."""
    from tminus.hosts.ssh import HostKeyError, SshError

    total, delay, backoff, max_delay = _retry_policy(step)
    timeout = step.timeout.total_seconds() if step.timeout is not None else None
    res = HostResult(name, "failed", error="not run")
    for attempt in range(1, total + 1):
        start = time.monotonic()
        try:
            res = await work(name, host, resolver, timeout)
        except HostKeyError as exc:
            msg = str(exc) + (f" ({exc.hint})" if exc.hint else "")
            res = HostResult(name, "failed", error=msg, fatal=True)
        except (ResolveError, ValueError) as exc:
            res = HostResult(name, "failed", error=str(exc), fatal=True)
        except SshError as exc:
            res = HostResult(name, "failed", error=str(exc))
        except TimeoutError:
            res = HostResult(name, "failed", error=f"timed out after {timeout:g}s")
        res.attempts = attempt
        res.duration = time.monotonic() - start
        if res.ok or res.fatal or attempt == total:
            break
        ctx.log(resolver.mask(f"{name}: {res.error} — retry {attempt}/{total - 1} in {delay:g}s"))
        await asyncio.sleep(delay)
        delay = min(delay * backoff, max_delay)
    return res


async def run_substep(step: StepBase, ctx: StepContext) -> StepOutcome:
    """Run a hook step as the engine runs a step: its retries, and its timeout (kinds that
    apply them per host or themselves excepted). Hooks arm no compensation."""
    from tminus.steps.registry import kind_of

    kind = kind_of(step)
    per_host = kind.per_host
    total, delay, backoff, max_delay = (1, 0.0, 1.0, 0.0) if per_host else _retry_policy(step)
    out = StepOutcome(False, error="not run")
    for attempt in range(1, total + 1):
        try:
            if step.timeout is not None and not kind.own_timeout and not per_host:
                out = await asyncio.wait_for(kind.execute(step, ctx), step.timeout.total_seconds())
            else:
                out = await kind.execute(step, ctx)
        except TimeoutError:
            out = StepOutcome(False, error=f"timed out after {step.timeout}")
        except Exception as exc:  # a kind's bug must not kill the rollout silently
            out = StepOutcome(False, error=ctx.resolver.mask(f"{type(exc).__name__}: {exc}"))
        if out.waiting:
            out = StepOutcome(False, error="a hook cannot wait for an approval")
        if out.ok or attempt == total:
            break
        await asyncio.sleep(delay)
        delay = min(delay * backoff, max_delay)
    return out


def _uses_host(step: StepBase) -> bool:
    text = step.model_dump_json(by_alias=True, exclude_none=True)
    return any(r.namespace == "" and r.name in HOST_VARIABLES for r in references(text))


class _Run:
    """One execution of a fleet step."""

    def __init__(
        self,
        ctx: StepContext,
        step: Any,
        phases: Sequence[HostWork],
        host_data: dict[str, Any] | None = None,
        revert: HostWork | None = None,
    ) -> None:
        self.ctx = ctx
        self.step = step
        self.phases = phases
        self.revert = revert
        self.host_data = host_data or {}
        self.fleet: Fleet = ctx.services.fleet
        self.hook = ctx.services.fleet_hook
        self.results: dict[str, HostResult] = {}
        self.sem = asyncio.Semaphore(self.fleet.forks)
        self.failures = 0
        self.fatal: str | None = None
        self.resolvers: dict[str, Resolver] = {}

    # --- helpers ---------------------------------------------------------------------------
    def resolver_for(self, name: str) -> Resolver:
        r = self.resolvers.get(name)
        if r is None:
            r = self.resolvers[name] = scoped(
                self.ctx.resolver, host=name, host_address=self.fleet.address(name)
            )
        return r

    def emit(self, res: HostResult) -> None:
        res.data = {**self.host_data, **res.data}
        self.results[res.host] = res
        msg = res.summary()
        self.ctx.emit("host.result", msg, res.event(self.ctx.key, self.hook))
        self.ctx.log(self.ctx.resolver.mask(msg[:300]))

    async def _phase(self, work: HostWork, name: str, batch: int, final: bool) -> HostResult:
        async with self.sem:
            res = await _attempts(
                name, self.fleet.host(name), self.resolver_for(name), work, self.step, self.ctx
            )
        res.batch = batch
        prev = self.results.get(name)
        if prev is not None and prev.data:  # keep what earlier phases recorded
            res.data = {**prev.data, **res.data}
        self.results[name] = res
        if res.fatal and self.fatal is None:
            self.fatal = f"{name}: {res.error}"
        if not res.ok or final:
            self.emit(res)
        return res

    async def hooks(
        self, which: str, batch: _Batch, for_hosts: list[str]
    ) -> tuple[str | None, dict[str, str]]:
        """Run a batch's hooks. Returns a batch-level failure, and per-host failures (hooks
        that use ``${host}`` run once per host)."""
        steps: list[StepBase] = list(getattr(self.step, which, []) or [])
        if not steps:
            return None, {}
        ok = [h for h in batch.hosts if self.results.get(h, HostResult(h)).ok]
        failed = [h for h in batch.hosts if h not in ok]
        base = {
            "batch_hosts": " ".join(batch.hosts),
            "batch_ok_hosts": " ".join(ok),
            "batch_failed_hosts": " ".join(failed),
            "batch_index": str(batch.index),
        }
        errors: dict[str, str] = {}
        services = self.ctx.services.for_hook()
        for k, hook in enumerate(steps):
            key = f"{self.ctx.key}/{which}/{batch.index}/{k}"
            if _uses_host(hook):
                live = [h for h in for_hosts if h not in errors]

                async def one(h: str, hook: StepBase = hook, key: str = key) -> StepOutcome:
                    r = scoped(
                        self.ctx.resolver, **base, host=h, host_address=self.fleet.address(h)
                    )
                    sub = dataclasses.replace(
                        self.ctx, resolver=r, key=f"{key}/{h}", services=services
                    )
                    async with self.sem:
                        return await run_substep(hook, sub)

                outs = await asyncio.gather(*(one(h) for h in live))
                for h, out in zip(live, outs, strict=True):
                    if not out.ok:
                        errors[h] = f"{which} '{hook.title()}' failed: {out.error}"
            else:
                r = scoped(self.ctx.resolver, **base)
                sub = dataclasses.replace(self.ctx, resolver=r, key=key, services=services)
                out = await run_substep(hook, sub)
                self.ctx.log(
                    self.ctx.resolver.mask(
                        f"[{which} {batch.index}] {hook.title()}: "
                        + ("ok" if out.ok else f"FAILED: {out.error}")
                    )
                )
                if not out.ok:
                    return f"{which} '{hook.title()}' failed: {out.error}", errors
        return None, errors

    # --- the rollout -----------------------------------------------------------------------
    def over_limit(self, batch: _Batch, failed: int, tolerated: int, last: bool) -> str | None:
        """Why the step stops after this batch's failures, or None: ``max_fail`` over the
        step, ``max_fail_per_batch`` over the batch, the first batch as a canary."""
        if self.failures > tolerated:
            return (
                f"{self.failures} host(s) failed, more than max_fail {self.step.max_fail!r} "
                f"allows ({tolerated})"
            )
        per_batch = getattr(self.step, "max_fail_per_batch", None)
        if per_batch is not None:
            allowed = tolerated_failures(per_batch, len(batch.hosts), "max_fail_per_batch")
            if failed > allowed:
                return (
                    f"{failed} host(s) of batch {batch.index} ({len(batch.hosts)}) failed, more "
                    f"than max_fail_per_batch {per_batch!r} allows ({allowed})"
                )
        if (
            batch.index == 1
            and failed
            and not last
            and getattr(self.step, "first_batch_canary", True)
        ):
            return (
                f"{failed} host(s) of the first batch (the canary) failed: the rollout stops "
                "(first_batch_canary: false lets max_fail decide)"
            )
        return None

    async def switch_back(self, failed: dict[str, str], batch: _Batch) -> None:
        """Hosts that failed their check after the last phase (an after_batch hook): undo the
        work on them (``revert``: a release switches ``current`` back) and record them failed."""
        revert = self.revert

        async def one(h: str) -> None:
            res = self.results[h]
            res.status, res.error = "failed", failed[h]
            if revert is not None:
                async with self.sem:
                    back = await _attempts(
                        h, self.fleet.host(h), self.resolver_for(h), revert, self.step, self.ctx
                    )
                res.data = {**res.data, **back.data}
                res.error += "; " + (
                    f"undone: {back.data.get('undone', 'ok')}"
                    if back.ok
                    else f"could not be undone: {back.error}"
                )
            self.emit(res)

        await asyncio.gather(*(one(h) for h in failed))

    async def run_batch(self, batch: _Batch, tolerated: int, last: bool = True) -> str | None:
        """One batch: hooks, the phases, hooks. Returns why the step stops, or None."""
        self.ctx.log(f"batch {batch.index}: {_names(batch.hosts)}")
        err, per_host = await self.hooks("before_batch", batch, batch.hosts)
        if err is not None:
            for h in batch.hosts:
                self.emit(HostResult(h, "skipped", error=f"not run: {err}", batch=batch.index))
            return err
        for h, e in per_host.items():
            self.emit(HostResult(h, "failed", error=e, batch=batch.index))
        failed = len(per_host)
        self.failures += failed
        live = [h for h in batch.hosts if h not in per_host]
        for n, work in enumerate(self.phases):
            final = n == len(self.phases) - 1
            outs = await asyncio.gather(*(self._phase(work, h, batch.index, final) for h in live))
            now = sum(1 for r in outs if r.status == "failed")
            failed += now
            self.failures += now
            live = [r.host for r in outs if r.ok]
            if not final and (self.fatal or self.over_limit(batch, failed, tolerated, last)):
                for h in live:
                    res = self.results[h]
                    res.status, res.error = "skipped", "stopped before this host was finished"
                    self.emit(res)
                live = []
                break
        err, per_host = await self.hooks("after_batch", batch, live)
        if err is not None and self.revert is not None:
            per_host = {h: err for h in live}  # the batch's own check failed: so did its hosts
        failed += len(per_host)
        self.failures += len(per_host)
        await self.switch_back(per_host, batch)
        if err is not None:
            return err
        if self.fatal:
            return self.fatal
        return self.over_limit(batch, failed, tolerated, last)

    async def pick_once(self, targets: list[str]) -> tuple[str | None, dict[str, str]]:
        """run_once: the first host of ``targets`` that can be connected to."""
        from tminus.hosts.ssh import SshError

        unreachable: dict[str, str] = {}
        for name in targets:
            connect = getattr(self.fleet.host(name), "connect", None)
            if connect is not None:
                try:
                    await connect()
                except SshError as exc:
                    unreachable[name] = str(exc)
                    self.ctx.log(self.ctx.resolver.mask(f"{name}: unreachable: {exc}"))
                    continue
            return name, unreachable
        return None, unreachable


def _names(hosts: list[str], limit: int = 12) -> str:
    shown = " ".join(hosts[:limit])
    return shown + (f" … (+{len(hosts) - limit})" if len(hosts) > limit else "")
