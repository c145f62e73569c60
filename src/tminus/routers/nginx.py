"""``kind: nginx``: tminus owns one include file; nothing else of the user's config is touched.

The include file holds, inside the ``http {}`` context where the user's config includes it:

- ``upstream <name> { server ADDR weight=W; ... }``: every pool's servers, a pool's percent
  spread evenly over its servers (integer weights in exact proportion). nginx refuses
  ``weight=0``, so a pool at 0% keeps its servers in the upstream marked ``down`` (the file
  still names every server, and switching back needs no other change);
- ``keepalive N;`` in every upstream it writes (the router's ``keepalive``, default
  :data:`DEFAULT_KEEPALIVE`; 0 leaves it out): each nginx worker keeps up to N idle
  connections to the servers and reuses them, instead of a new upstream connection per
  request. nginx needs ``proxy_http_version 1.1;`` and ``proxy_set_header Connection "";``
  where it proxies (``verify`` reports their absence);
- with ``cookie:``, one upstream per pool (``<name>__<pool>``, every server, no weights) and
  ``map $cookie_<cookie> $tminus_<name>_route { ... }`` whose value is the weighted upstream,
  or for requests carrying the cookie (any non-empty value; with ``cookie: {name, value}``
  only that value, ``"1" backend__canary;``) the routed pool's upstream. The
  user's ``location`` then says ``proxy_pass http://$tminus_<name>_route;``: a variable naming
  a defined upstream needs no ``resolver``.

A change is written atomically (temp file + rename), checked with ``nginx -t`` (the previous
file is put back if nginx refuses it, and nginx's message is the error), then nginx reloads
gracefully (SIGHUP to the master when its pid file is known, as ``nginx -s reload`` does
without the extra process; else ``nginx -s reload``, or the plan's ``reload:`` command): new
workers start with the new file and old workers finish their in-flight requests (and their
upstream keep-alive connections) before they exit. When the master's pid file is known, the
change returns only once the new workers run and the old ones are shutting down, so traffic
sent afterwards follows the new split.

An ``urgent`` change (traffic back to safety) reloads first and runs ``nginx -t`` while the
master starts its new workers: the master checks the file itself and keeps its old workers if
it refuses it, so ``nginx -t`` failing means the reload did not happen, and the previous file
is put back and the call fails as before; ``nginx -t`` (~20–40 ms) is off the critical path.

``get_weights`` reads the include file back (the file nginx loaded at the last reload; a
change that nginx refused is never left in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import ClassVar, NoReturn

from tminus.hosts.base import CompletedRun
from tminus.hosts.local import LocalHost
from tminus.plan.targets import NginxRouter, cookie_parts
from tminus.routers.base import (
    Router,
    RouterContext,
    RouterError,
    check_weights,
    pool_problems,
)
from tminus.routers.nginx_include import (
    DEFAULT_KEEPALIVE,
    parse_include,
    parse_route,
    render_include,
    route_variable,
)

__all__ = [
    "DEFAULT_KEEPALIVE",
    "KIND",
    "Nginx",
    "NginxKind",
    "parse_include",
    "parse_route",
    "render_include",
    "route_variable",
]

_PID = re.compile(r"^\s*pid\s+([^;\s]+)\s*;", re.M)

#: How often (s) a reload's wait looks at the master's children.
RELOAD_POLL_S = 0.005

_KEEPALIVE_NEEDS = (
    (re.compile(r"^\s*proxy_http_version\s+1\.1\s*;", re.M), "proxy_http_version 1.1;"),
    (
        re.compile(r"^\s*proxy_set_header\s+Connection\s", re.M | re.I),
        'proxy_set_header Connection "";',
    ),
)

#: One asyncio lock per include file, so concurrent steps in one process take turns.
_locks: dict[str, asyncio.Lock] = {}


def _children(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` with their command lines (Linux /proc)."""
    kids: list[int] = []
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        kids = [int(x) for x in text.split()]
    except OSError:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text(errors="replace")
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    out: dict[int, str] = {}
    for kid in kids:
        try:
            raw = Path(f"/proc/{kid}/cmdline").read_bytes()
        except OSError:
            continue
        out[kid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return out


class _NoNewWorkers(RouterError):
    pass


class Nginx:
    """One nginx router: its include file, its binary and how it reloads."""

    def __init__(self, name: str, cfg: NginxRouter, ctx: RouterContext) -> None:
        r = ctx.resolver
        self.name = name
        self.include = Path(r.resolve(cfg.include_file))
        self.prefix = r.resolve(cfg.prefix) if cfg.prefix else None
        self.config = r.resolve(cfg.config) if cfg.config else None
        if self.config and not self.prefix and not Path(self.config).is_absolute():
            # Plan paths are relative to where tminus runs; nginx would read a relative -c
            # against its compiled-in prefix (/usr/share/nginx) instead.
            self.config = str(Path(self.config).absolute())
        self.nginx = r.resolve(cfg.nginx)
        self.reload_command = r.resolve_shell(cfg.reload) if cfg.reload else None
        self.upstream = cfg.upstream
        parts = cookie_parts(cfg.cookie)
        self.cookie: str | None = parts[0] if parts else None
        self.cookie_value: str | None = parts[1] if parts else None
        self.pool_servers = {p: [r.resolve(a) for a in addrs] for p, addrs in cfg.pools.items()}
        self._pid_file = r.resolve(cfg.pid_file) if cfg.pid_file else None
        self.keepalive = cfg.keepalive
        self._mask = r.mask
        self.reload_timeout = 15.0
        problems = self._config_problems()
        if problems:
            raise RouterError(f"router '{name}': " + "; ".join(problems))

    # --- the Router protocol --------------------------------------------------------------
    def pools(self) -> list[str]:
        return list(self.pool_servers)

    async def get_weights(self) -> dict[str, int]:
        weights, _route = self._read_state()
        return weights

    async def set_weights(
        self, weights: Mapping[str, int], *, urgent: bool = False
    ) -> float | None:
        """``urgent``: reload first, ``nginx -t`` while the new workers start (see the
        module's docstring); a refused file is put back either way."""
        split = check_weights(weights, self.pools())
        async with self._locked():
            await self._apply(split, self._current_route(), urgent=urgent)
        return None  # new workers take the traffic some time after the reload: the return

    async def set_cookie_route(self, pool: str | None) -> None:
        if not self.cookie:
            raise RouterError(
                f"router '{self.name}' has no cookie", hint="set 'cookie:' on the nginx router"
            )
        if pool is not None and pool not in self.pool_servers:
            raise RouterError(f"unknown pool '{pool}'", hint="pools: " + ", ".join(self.pools()))
        async with self._locked():
            split, _route = self._read_state()
            await self._apply(split, pool)

    async def get_cookie_route(self) -> str | None:
        """The pool that requests carrying the cookie go to now, or ``None``."""
        if not self.cookie:
            return None
        _split, route = self._read_state()
        return route if route in self.pool_servers else None

    async def verify(self) -> list[str]:
        problems = self._config_problems()
        if not self.include.exists():
            problems.append(f"the include file {self.include} does not exist yet")
        else:
            try:
                self._read_state()
            except RouterError as exc:
                problems.append(str(exc))
        run = await self._nginx("-T")
        if not run.ok:
            problems.append("nginx -t failed: " + self._tail(run.stderr or run.stdout))
            return problems
        dumped = run.stdout
        names = {str(self.include), str(self.include.resolve())}
        if not any(f"# configuration file {n}:" in dumped for n in names):
            problems.append(
                f"the nginx config does not include {self.include} "
                f"(add 'include {self.include};' inside http {{}})"
            )
        target = f"${route_variable(self.upstream)}" if self.cookie else self.upstream
        if f"http://{target}" not in dumped:
            problems.append(f"no 'proxy_pass http://{target}' in the nginx config")
        if self.keepalive > 0:
            missing = [text for rx, text in _KEEPALIVE_NEEDS if not rx.search(dumped)]
            if missing:
                problems.append(
                    f"keepalive {self.keepalive} needs {' and '.join(missing)} where nginx "
                    "proxies to the upstream (else every request opens a new upstream "
                    "connection); or set keepalive: 0"
                )
        return problems

    # --- internals ------------------------------------------------------------------------
    def _config_problems(self) -> list[str]:
        return pool_problems(
            self.pool_servers, r"[^\s;{}'\"#]+", "server address {} is not a plain address"
        )

    def _current_route(self) -> str | None:
        """The cookie route in the include file now, if it names one of our pools."""
        try:
            route = parse_route(self.include.read_text(), self.upstream)
        except OSError:
            return None
        return route if route in self.pool_servers else None

    def _read_state(self) -> tuple[dict[str, int], str | None]:
        try:
            text = self.include.read_text()
        except FileNotFoundError:
            raise RouterError(
                f"router '{self.name}': the include file {self.include} does not exist",
                hint="tminus writes it on the first change; nginx must include it "
                "(see docs/routers.md)",
            ) from None
        except OSError as exc:
            raise RouterError(f"cannot read {self.include}: {exc}") from None
        return parse_include(text, self.upstream, self.pool_servers)

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        lock = _locks.setdefault(str(self.include.resolve()), asyncio.Lock())
        async with lock:
            lock_path = self.include.parent / f".{self.include.name}.tminus-lock"
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise RouterError(f"cannot lock {self.include}: {exc}") from None
            try:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _write(self, text: str | None) -> None:
        """Replace the include file atomically (``None`` removes it)."""
        if text is None:
            self.include.unlink(missing_ok=True)
            return
        tmp = self.include.parent / f".{self.include.name}.tminus-tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, self.include.stat().st_mode & 0o7777)
        os.replace(tmp, self.include)

    async def _apply(self, split: dict[str, int], route: str | None, urgent: bool = False) -> None:
        new = render_include(
            self.name,
            self.upstream,
            self.pool_servers,
            split,
            self.cookie,
            route,
            self.cookie_value,
            self.keepalive,
        )
        try:
            old: str | None = self.include.read_text()
        except FileNotFoundError:
            old = None
        if old == new:
            return  # idempotent: nothing to reload
        try:
            self._write(new)
        except OSError as exc:
            raise RouterError(f"cannot write {self.include}: {exc}") from None
        master = self._master_pid()
        if urgent and master and not self.reload_command:
            await self._reload_then_test(master, old)
            return
        test = await self._nginx("-t")
        if not test.ok:
            self._refused(old, test)
        before = _children(master) if master else {}
        reload = await self._reload(master)
        if not reload.ok:
            self._write(old)
            raise RouterError(
                "nginx reload failed, the previous include file is back: "
                + self._tail(reload.stderr or reload.stdout)
            )
        if master:
            try:
                await self._wait_reloaded(master, before)
            except _NoNewWorkers:
                self._write(old)  # what the master still runs (it refused the reload)
                raise

    def _refused(self, old: str | None, test: CompletedRun) -> NoReturn:
        self._write(old)
        raise RouterError(
            f"nginx rejected the new {self.include.name}, the previous one is back: "
            + self._tail(test.stderr or test.stdout),
            hint="fix the nginx config (see docs/routers.md for what it must contain)",
        )

    async def _reload_then_test(self, master: int, old: str | None) -> None:
        """The urgent order: SIGHUP now, ``nginx -t`` while the master starts new workers. The
        master checks the file itself and keeps its old workers if it refuses it: ``nginx -t``
        failing means no reload, so the previous file is put back and the call fails."""
        before = _children(master)
        try:
            os.kill(master, signal.SIGHUP)
        except OSError as exc:
            self._write(old)
            raise RouterError(
                f"cannot signal the nginx master {master}: {exc}; the previous file is back"
            ) from None
        wait = asyncio.create_task(self._wait_reloaded(master, before))
        test = asyncio.create_task(self._nginx("-t"))
        try:
            done, _ = await asyncio.wait({wait, test}, return_when=asyncio.FIRST_COMPLETED)
            if wait in done:
                wait.result()  # the master runs the new file: nginx itself accepted it
                await test  # reap the check's process
                return
            result = test.result()
            if not result.ok:
                wait.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await wait
                self._refused(old, result)
            try:
                await wait
            except _NoNewWorkers:
                self._write(old)
                raise
        finally:
            for task in (wait, test):
                if not task.done():
                    task.cancel()

    async def _nginx(self, *args: str) -> CompletedRun:
        cmd = [self.nginx]
        if self.prefix:
            cmd += ["-p", self.prefix]
        if self.config:
            cmd += ["-c", self.config]
        return await LocalHost().run([*cmd, *args], timeout=60)

    async def _reload(self, master: int | None = None) -> CompletedRun:
        if self.reload_command:
            return await LocalHost().run(self.reload_command, timeout=120)
        if master:
            try:  # what `nginx -s reload` does, without starting a process to do it
                os.kill(master, signal.SIGHUP)
                return CompletedRun("localhost", f"kill -HUP {master}", 0, "", "")
            except OSError:
                pass  # another user's nginx: let `nginx -s reload` say why
        return await self._nginx("-s", "reload")

    def _pid_path(self) -> Path | None:
        if self._pid_file:
            return self._resolve_path(self._pid_file)
        if self.config:
            with contextlib.suppress(OSError):
                m = _PID.search(Path(self._resolve_path(self.config)).read_text())
                if m:
                    return self._resolve_path(m.group(1))
        default = Path("/run/nginx.pid")
        return default if default.exists() else None

    def _resolve_path(self, path: str) -> Path:
        p = Path(path)
        if not p.is_absolute() and self.prefix:
            p = Path(self.prefix) / p
        return p

    def _master_pid(self) -> int | None:
        path = self._pid_path()
        if path is None:
            return None
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    async def _wait_reloaded(self, master: int, before: dict[int, str]) -> None:
        """Until a new worker runs and every old one is shutting down (or gone)."""
        old_workers = {pid for pid, cmd in before.items() if "worker process" in cmd}
        deadline = time.monotonic() + self.reload_timeout
        while True:
            now = _children(master)
            started = [p for p, cmd in now.items() if p not in before and "worker" in cmd]
            lingering = [p for p in old_workers if p in now and "shutting down" not in now[p]]
            if started and not lingering:
                return
            if not Path(f"/proc/{master}").exists():
                raise RouterError(f"the nginx master {master} exited during the reload")
            if time.monotonic() > deadline:
                raise _NoNewWorkers(
                    f"nginx did not start new workers within {self.reload_timeout:g}s of the "
                    "reload, the previous include file is back; see nginx's error log"
                )
            await asyncio.sleep(RELOAD_POLL_S)

    def _tail(self, text: str) -> str:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        return self._mask(" | ".join(lines[-4:]))[-800:] or "(no output)"


class NginxKind:
    kind: ClassVar[str] = "nginx"

    def open(self, config: NginxRouter, ctx: RouterContext) -> Nginx:
        return Nginx(ctx.name, config, ctx)


KIND = NginxKind()


def _conforms(impl: Nginx) -> Router:  # mypy checks Nginx against the Protocol
    return impl
