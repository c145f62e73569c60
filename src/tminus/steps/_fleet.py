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
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tminus.errors import TminusError
from tminus.hosts.base import Host
from tminus.plan.interpolate import ResolveError, Resolver, references
from tminus.plan.steps import (
    FLEET_HOOK_VARIABLES,
    FLEET_HOST_VARIABLES,
    StepBase,
    batch_sizes,
    tolerated_failures,
)
from tminus.steps.base import StepContext, StepOutcome

if TYPE_CHECKING:
    from tminus.hosts.fleet import Fleet
    from tminus.plan.model import Plan

__all__ = [
    "HOOK_VARIABLES",
    "HOST_VARIABLES",
    "History",
    "HostResult",
    "HostWork",
    "host_key_problems",
    "natural_key",
    "rollout",
    "run_substep",
    "scoped",
    "tail",
]

HOST_VARIABLES = FLEET_HOST_VARIABLES
HOOK_VARIABLES = FLEET_HOOK_VARIABLES

#: Characters of stdout/stderr kept per host in events and artifacts.
TAIL = 4000


def tail(text: str, n: int = TAIL) -> str:
    return text[-n:] if len(text) > n else text


def natural_key(name: str) -> list[Any]:
    """``h2`` before ``h10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def scoped(resolver: Resolver, **values: str) -> Resolver:
    """The same resolver (secrets, masker, artifacts) with a few more variables."""
    return dataclasses.replace(resolver, variables={**resolver.variables, **values})


def placeholder(resolver: Resolver) -> Resolver:
    """For describe() and dry runs: per-host and per-batch variables shown as placeholders."""
    return scoped(resolver, **{v: f"<{v}>" for v in (*HOST_VARIABLES, *HOOK_VARIABLES)})


def shown(resolver: Resolver, *, shell: bool = False) -> Callable[[str], str]:
    """For describe(): resolve with placeholders; a value not available yet (an artifact)
    is shown as written rather than failing the description."""
    r = placeholder(resolver)

    def show(text: str) -> str:
        try:
            return r.resolve_shell(text) if shell else r.resolve(text)
        except ResolveError:
            return text

    return show


@dataclass
class HostResult:
    """What happened on one host in one step."""

    host: str
    status: str = "ok"  # ok | failed | skipped | excluded
    exit: int | None = None
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    attempts: int = 0
    duration: float = 0.0
    batch: int | None = None
    data: dict[str, Any] = field(default_factory=dict)  # kind-specific
    fatal: bool = False  # stop the whole step (host key problem, bad configuration)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def record(self) -> dict[str, Any]:
        """For the step's artifacts: compact, no output."""
        out: dict[str, Any] = {"status": self.status, "exit": self.exit}
        if self.error:
            out["error"] = self.error
        if self.attempts:
            out["attempts"] = self.attempts
        if self.batch is not None:
            out["batch"] = self.batch
        out.update(self.data)
        return out

    def event(self, key: str, hook: bool) -> dict[str, Any]:
        out = {
            "step": key,
            "host": self.host,
            "status": self.status,
            "exit": self.exit,
            "error": self.error,
            "stdout": tail(self.stdout),
            "stderr": tail(self.stderr),
            "attempts": self.attempts,
            "duration": round(self.duration, 3),
            "batch": self.batch,
            **self.data,
        }
        if hook:
            out["hook"] = True
        return out

    def summary(self) -> str:
        text = f"{self.host}: {self.status}"
        if self.exit not in (None, 0):
            text += f" (exit {self.exit})"
        if self.error:
            text += f": {self.error}"
        return text


#: One phase of the work on one host: (host name, host, resolver with ${host}, timeout).
HostWork = Callable[[str, Host, Resolver, float | None], Awaitable[HostResult]]


@dataclass
class History:
    """What the deploy's event log says about hosts: exclusions and earlier results."""

    excluded: dict[str, str] = field(default_factory=dict)  # host -> who excluded it
    # (step key, host) -> the latest host.result data of that step (hooks left out)
    latest: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    step_state: dict[str, str] = field(default_factory=dict)  # step key -> its latest state
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, fleet: Fleet | None) -> History:
        events = fleet.events() if fleet is not None and fleet.events is not None else []
        h = cls(events=events)
        for e in events:
            data = e.get("data") or {}
            if e["type"] == "host.excluded" and data.get("host"):
                h.excluded[str(data["host"])] = str(data.get("by") or "the operator")
            elif e["type"] == "host.result" and not data.get("hook") and data.get("host"):
                h.latest[(str(data.get("step")), str(data["host"]))] = data
            elif e["type"].startswith("step.") and e.get("key"):
                h.step_state[str(e["key"])] = e["type"][5:]
        return h

    def ok_in(self, key: str) -> set[str]:
        return {h for (k, h), d in self.latest.items() if k == key and d.get("status") == "ok"}

    def failed_before(self, key: str) -> dict[str, str]:
        """Hosts that failed an earlier forward step which succeeded all the same (its
        max_fail tolerated them) -> that step. Such hosts are out of the rollout. The failed
        hosts of a step that failed (then skipped, ignored or retried) are not."""
        out: dict[str, str] = {}
        for (k, h), d in self.latest.items():
            if (
                k != key
                and d.get("status") == "failed"
                and self.step_state.get(k) in ("succeeded", "rolled_back")
                and not k.startswith("rollback/")
            ):
                out.setdefault(h, k)
        return out


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


# --- preflight: unknown host keys fail before anything runs ---------------------------------


class _KeyCheck:
    """Host keys of one plan's hosts, each host checked once (the runner calls the preflight
    for every step); the hosts of a step are checked concurrently."""

    def __init__(self, plan: Plan, resolver: Resolver) -> None:
        from tminus.hosts.fleet import Fleet

        self.plan = plan
        self.fleet = Fleet(plan, resolver)
        self.hosts: dict[str, str | None] = {}

    def problems(self, names: list[str]) -> list[str]:
        todo = [n for n in dict.fromkeys(names) if n not in self.hosts]
        if todo:
            self.hosts.update(_run_sync(self._check_all(todo)))
        return [p for p in (self.hosts.get(n) for n in names) if p]

    async def _check_all(self, names: list[str]) -> dict[str, str | None]:
        gate = asyncio.Semaphore(32)

        async def one(name: str) -> tuple[str, str | None]:
            async with gate:
                try:
                    return name, await self.fleet.pool.ssh(name).check_host_key()
                except TminusError as exc:  # an unreadable known_hosts
                    return name, str(exc)

        return dict(await asyncio.gather(*(one(n) for n in names)))


def _run_sync(coro: Any) -> Any:
    """Run ``coro`` to completion from synchronous code, inside a running loop or not."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


_key_checks: dict[int, _KeyCheck] = {}


def host_key_problems(step: Any, plan: Plan, resolver: Resolver) -> list[str]:
    """Hosts of ``step.on`` whose key is unknown (unless the plan accepts new keys), CHANGED
    or revoked: refused before the deploy starts, so `tminus run` exits 2 having changed
    nothing. Each host's key is fetched with a key exchange alone (no login); a host that
    cannot be reached is left to the run (a failed host)."""
    check = _key_checks.get(id(plan))
    if check is None or check.plan is not plan:
        _key_checks.clear()
        check = _key_checks[id(plan)] = _KeyCheck(plan, resolver)
    try:
        names = check.fleet.names(step.on)
    except TminusError:
        return []  # `tminus check` reports unknown names
    return check.problems([n for n in names if not check.fleet.is_local(n)])


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
