"""``kind: haproxy``: weights and server states through the runtime API (the stats socket),
kept in step with the config file so that a restart keeps them.

- A split is applied in **one** runtime API call: ``set server B/S weight N`` and
  ``set server B/S state ready`` for the pools that get traffic first, then
  ``set server B/S state drain`` for the pools at 0 (existing connections finish; drained
  servers still accept persistent connections). HAProxy runs the ``;``-separated commands in
  order, so there is no instant where every server is drained.
- A pool's percent is spread over its servers as integer weights in HAProxy's 0–256 range
  (exact when the pools' sizes allow it, else the closest whole weights, never 0 for a pool
  that should get traffic).
- ``get_weights`` reads ``show servers state <backend>``: a drained or maintenance server
  counts 0, any other server its current weight.
- With ``config:``, the ``server`` lines of the backend's pool servers are rewritten to match
  (``weight N``; a drained pool is written as ``weight 0``, HAProxy's config form of "no
  load-balanced traffic"; ``disabled`` is removed from servers made ready). Every other byte of
  the file stays as it was. The rewrite is checked with ``haproxy -c`` first when the current
  file passes that check; for an ``urgent`` change (traffic back to safety) after the runtime
  call, so that the check is not on the rollback's critical path.
- Cookie routing: ``cookie_map`` is a map file the config's ``use_backend`` rule reads (see
  docs/routers.md); its ``route`` entry names the backend that serves requests carrying the
  cookie. tminus sets it with ``set map``/``add map``/``del map`` and writes the file too.
  With ``cookie: {name, value}`` the map is keyed by the cookie's value instead: the entry
  ``<value> <backend>``, read by ``use_backend %[req.cook(NAME),map(FILE)]``, so that only
  that value is routed (``canary=0`` follows the weights).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from tminus.hosts.local import LocalHost
from tminus.plan.targets import HaproxyRouter, cookie_parts
from tminus.routers.base import (
    Router,
    RouterContext,
    RouterError,
    check_weights,
    pool_problems,
    split_percent,
)
from tminus.routers.haproxy_api import HaproxyApiError, runtime_command

__all__ = ["KIND", "Haproxy", "HaproxyKind", "ServerState", "rewrite_config", "server_weights"]

#: ``srv_admin_state`` flags (HAProxy's ``enum srv_admin``): any maintenance, any drain.
ADMF_MAINT = 0x23
ADMF_DRAIN = 0x18
MAX_WEIGHT = 256

_SECTION = re.compile(
    r"^\s*(global|defaults|frontend|backend|listen|peers|resolvers|userlist|mailers|program|"
    r"http-errors|ring|cache|log-forward|fcgi-app|crt-store|traces)\b\s*(\S*)"
)
_SERVER_LINE = re.compile(r"^(\s*server\s+)(\S+)(\s+)(.*?)(\r?\n)?$", re.S)


@dataclass(frozen=True)
class ServerState:
    """One server as ``show servers state`` reports it."""

    name: str
    weight: int  # srv_uweight: the weight set by config or the runtime API
    admin: int  # srv_admin_state flags

    @property
    def drained(self) -> bool:
        return bool(self.admin & ADMF_DRAIN)

    @property
    def maint(self) -> bool:
        return bool(self.admin & ADMF_MAINT)

    @property
    def effective(self) -> int:
        """The weight that load balancing uses: 0 while drained or in maintenance."""
        return 0 if (self.drained or self.maint) else self.weight

    @property
    def state(self) -> str:
        return "maint" if self.maint else ("drain" if self.drained else "ready")


def server_weights(weights: Mapping[str, int], pools: Mapping[str, list[str]]) -> dict[str, int]:
    """Per-server weights in 0–256 whose pool sums are in proportion to ``weights``."""
    live = {p: s for p, s in pools.items() if weights.get(p, 0) > 0}
    out = {srv: 0 for servers in pools.values() for srv in servers}
    if not live:
        return out
    scale = math.lcm(*(len(s) for s in live.values()))
    exact = {p: weights[p] * scale // len(s) for p, s in live.items()}
    common = math.gcd(*exact.values())
    exact = {p: w // common for p, w in exact.items()}
    if max(exact.values()) <= MAX_WEIGHT:
        per_server = exact
    else:
        top = max(weights[p] / len(s) for p, s in live.items())
        per_server = {
            p: max(1, round(weights[p] / len(s) * MAX_WEIGHT / top)) for p, s in live.items()
        }
    for p, servers in live.items():
        for srv in servers:
            out[srv] = per_server[p]
    return out


def _split_comment(rest: str) -> tuple[str, str]:
    """``rest`` of a config line split into its parameters and its ``#`` comment."""
    quote = ""
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i], rest[i:]
    return rest, ""


def _rewrite_server(params: str, weight: int, ready: bool) -> str:
    body, comment = _split_comment(params)
    trail = body[len(body.rstrip()) :]
    body = body.rstrip()
    if ready:
        body = re.sub(r"(^|\s+)disabled(?=\s|$)", "", body)
    if re.search(r"(^|\s)weight\s+\S+", body):
        body = re.sub(r"((?:^|\s)weight\s+)\S+", lambda m: f"{m.group(1)}{weight}", body, count=1)
    else:
        body = f"{body} weight {weight}" if body else f"weight {weight}"
    return body + (trail or (" " if comment else "")) + comment


#: Per config file, the shape (:meth:`Haproxy._shape`) of the newest rewrite ``haproxy -c``
#: passed in this process. One of the same shape differs only in what tminus writes on the
#: pools' lines (weights 0-256, ``disabled`` taken away): it is not checked again (~30 ms CPU).
_CHECKED_SHAPES: dict[str, str] = {}


def rewrite_config(
    text: str, backend: str, weights: Mapping[str, int], ready: Mapping[str, bool]
) -> str:
    """``text`` with the ``server`` lines of ``backend`` (or ``listen backend``) named in
    ``weights`` rewritten; every other line byte for byte as it was."""
    out: list[str] = []
    section, name = "", ""
    seen: set[str] = set()
    for line in text.splitlines(keepends=True):
        m = _SECTION.match(line)
        if m:
            section, name = m.group(1), m.group(2)
            out.append(line)
            continue
        inside = section in ("backend", "listen") and name == backend
        sm = _SERVER_LINE.match(line) if inside else None
        if sm is None or sm.group(2) not in weights:
            out.append(line)
            continue
        srv = sm.group(2)
        seen.add(srv)
        new_params = _rewrite_server(sm.group(4), weights[srv], ready[srv])
        out.append(sm.group(1) + srv + sm.group(3) + new_params + (sm.group(5) or ""))
    missing = sorted(set(weights) - seen)
    if missing:
        raise RouterError(
            f"the HAProxy config has no 'server' line for {', '.join(missing)} in backend "
            f"'{backend}'",
            hint="the pools name servers of the backend, as in the config",
        )
    return "".join(out)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tminus-tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    with contextlib.suppress(FileNotFoundError):
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)


def _answer_errors(answer: str) -> list[str]:
    """Lines of a runtime API answer to commands that print nothing when they succeed."""
    return [ln.strip() for ln in answer.splitlines() if ln.strip()]


_locks: dict[str, asyncio.Lock] = {}


class Haproxy:
    """One HAProxy backend split into pools of servers."""

    def __init__(self, name: str, cfg: HaproxyRouter, ctx: RouterContext) -> None:
        r = ctx.resolver
        self.name = name
        self.socket = r.resolve(cfg.socket)
        self.backend = r.resolve(cfg.backend)
        self.config = Path(r.resolve(cfg.config)) if cfg.config else None
        self.haproxy = r.resolve(cfg.haproxy)
        self.pool_servers = {p: [r.resolve(s) for s in srvs] for p, srvs in cfg.pools.items()}
        parts = cookie_parts(cfg.cookie)
        self.cookie: str | None = parts[0] if parts else None
        self.cookie_value: str | None = parts[1] if parts else None
        #: the map key tminus sets: ``route`` (any value of the cookie) or the one value
        self.cookie_key = self.cookie_value if self.cookie_value is not None else "route"
        self.cookie_map = r.resolve(cfg.cookie_map) if cfg.cookie_map else None
        self.cookie_backends = {
            p: r.resolve(cfg.cookie_backends.get(p, f"{self.backend}_{p}")) for p in cfg.pools
        }
        self._mask = r.mask
        problems = self._config_problems()
        if problems:
            raise RouterError(f"router '{name}': " + "; ".join(problems))

    # --- the Router protocol --------------------------------------------------------------
    def pools(self) -> list[str]:
        return list(self.pool_servers)

    async def get_weights(self) -> dict[str, int]:
        states = await self.servers_state()
        amounts = {
            pool: float(sum(self._state(states, srv).effective for srv in servers))
            for pool, servers in self.pool_servers.items()
        }
        return split_percent(amounts)

    async def set_weights(
        self, weights: Mapping[str, int], *, urgent: bool = False
    ) -> float | None:
        """The split in one runtime call, the config file rewritten to match. The rewrite is
        checked with ``haproxy -c`` (~30 ms) before the runtime call, or, ``urgent`` (traffic
        back to safety), after it: the traffic moves first, and a rewrite that fails the
        check is not written (a RouterError says the split is live, the file not). Urgent:
        returns when the runtime call was answered (the traffic had moved)."""
        split = check_weights(weights, self.pools())
        per_server = server_weights(split, self.pool_servers)
        ready = {srv: split[p] > 0 for p, srvs in self.pool_servers.items() for srv in srvs}
        async with self._lock():
            before = await self.servers_state()
            for servers in self.pool_servers.values():
                for srv in servers:
                    self._state(before, srv)  # every server must exist
            new_config = None if urgent else await self._checked_config(per_server, ready)
            commands: list[str] = []
            for srv, w in per_server.items():
                if ready[srv]:
                    commands.append(f"set server {self.backend}/{srv} weight {w}")
                    commands.append(f"set server {self.backend}/{srv} state ready")
            for srv in per_server:
                if not ready[srv]:
                    commands.append(f"set server {self.backend}/{srv} state drain")
            errors = _answer_errors(await self._call("; ".join(commands)))
            moved = time.time()
            if errors:
                await self._restore(before)
                raise RouterError(
                    f"HAProxy refused the change ({'; '.join(errors)}); the previous weights "
                    "and states are back"
                )
            if urgent:
                try:
                    new_config = await self._checked_config(per_server, ready)
                except RouterError as exc:
                    raise RouterError(
                        f"the new split is live, but {self.config} was not rewritten: {exc}",
                        hint="a restart of HAProxy would bring back the old weights",
                    ) from None
            if new_config is not None and self.config is not None:
                try:
                    _atomic_write(self.config, new_config)
                except OSError as exc:
                    raise RouterError(
                        f"the new split is live but {self.config} could not be written: {exc}",
                        hint="a restart of HAProxy would bring back the old weights",
                    ) from None
        return moved if urgent else None

    async def set_cookie_route(self, pool: str | None) -> None:
        if not self.cookie_map:
            raise RouterError(
                f"router '{self.name}' has no cookie map",
                hint="set 'cookie' and 'cookie_map' on the haproxy router (docs/routers.md)",
            )
        if pool is not None and pool not in self.pool_servers:
            raise RouterError(f"unknown pool '{pool}'", hint="pools: " + ", ".join(self.pools()))
        async with self._lock():
            current = await self.get_cookie_route_backend()
            target = self.cookie_backends[pool] if pool is not None else None
            key = self.cookie_key
            if target is None:
                command = f"del map {self.cookie_map} {key}" if current is not None else ""
            elif current is None:
                command = f"add map {self.cookie_map} {key} {target}"
            else:
                command = f"set map {self.cookie_map} {key} {target}"
            if command:
                errors = _answer_errors(await self._call(command))
                if errors:
                    raise RouterError(f"HAProxy refused '{command}': {'; '.join(errors)}")
            try:
                _atomic_write(Path(self.cookie_map), f"{key} {target}\n" if target else "")
            except OSError as exc:
                raise RouterError(
                    f"the cookie route is live but {self.cookie_map} could not be written: {exc}"
                ) from None

    async def verify(self) -> list[str]:
        problems = self._config_problems()
        try:
            states = await self.servers_state()
        except RouterError as exc:
            return [*problems, str(exc)]
        for servers in self.pool_servers.values():
            for srv in servers:
                if srv not in states:
                    problems.append(f"backend '{self.backend}' has no server '{srv}'")
        if self.cookie_map:
            maps = await self._call("show map")
            if f"({self.cookie_map})" not in maps:
                problems.append(f"HAProxy has not loaded the map {self.cookie_map}")
            names = set((await self._call("show backend")).split())
            for pool, be in self.cookie_backends.items():
                if be not in names:
                    problems.append(f"no backend '{be}' for cookie requests to pool '{pool}'")
        if self.config is not None:
            every = [srv for servers in self.pool_servers.values() for srv in servers]
            try:
                text = self.config.read_text()
                rewrite_config(
                    text, self.backend, dict.fromkeys(every, 0), dict.fromkeys(every, True)
                )
            except (OSError, RouterError) as exc:
                problems.append(str(exc))
        return problems

    # --- extras ---------------------------------------------------------------------------
    async def servers_state(self) -> dict[str, ServerState]:
        """``show servers state <backend>`` by server name."""
        answer = await self._call(f"show servers state {self.backend}")
        lines = answer.splitlines()
        header = next((ln for ln in lines if ln.startswith("# be_id")), None)
        if header is None:
            raise RouterError(
                f"HAProxy has no backend '{self.backend}': {answer.strip()[:200]}",
                hint="the router's 'backend' must name a backend (or listen) section",
            )
        cols = header[2:].split()
        out: dict[str, ServerState] = {}
        for ln in lines[lines.index(header) + 1 :]:
            fields = ln.split()
            if len(fields) < len(cols) - 8:  # later columns vary between versions
                continue
            row = dict(zip(cols, fields, strict=False))
            out[row["srv_name"]] = ServerState(
                row["srv_name"], int(row["srv_uweight"]), int(row["srv_admin_state"])
            )
        return out

    async def get_cookie_route_backend(self) -> str | None:
        """The backend the cookie map routes to now (``None``: no route)."""
        if not self.cookie_map:
            return None
        answer = await self._call(f"show map {self.cookie_map}")
        for ln in answer.splitlines():
            fields = ln.split()
            if len(fields) == 3 and fields[1] == self.cookie_key:
                return fields[2]
        if answer.strip() and not answer.lstrip().startswith("0x"):
            raise RouterError(f"HAProxy: show map {self.cookie_map}: {answer.strip()[:200]}")
        return None

    async def get_cookie_route(self) -> str | None:
        """The pool that requests carrying the cookie go to, or ``None``."""
        backend = await self.get_cookie_route_backend()
        for pool, be in self.cookie_backends.items():
            if be == backend:
                return pool
        return None

    # --- internals ------------------------------------------------------------------------
    def _config_problems(self) -> list[str]:
        return pool_problems(
            self.pool_servers,
            r"[A-Za-z0-9_.:-]+",
            "server name {} is not a plain HAProxy server name",
        )

    def _state(self, states: Mapping[str, ServerState], srv: str) -> ServerState:
        try:
            return states[srv]
        except KeyError:
            raise RouterError(
                f"HAProxy backend '{self.backend}' has no server '{srv}'",
                hint="servers: " + ", ".join(sorted(states)),
            ) from None

    @contextlib.asynccontextmanager
    async def _lock(self) -> AsyncIterator[None]:
        lock = _locks.setdefault(self.socket, asyncio.Lock())
        async with lock:
            yield

    async def _call(self, command: str) -> str:
        try:
            return await runtime_command(self.socket, command)
        except HaproxyApiError as exc:
            raise RouterError(self._mask(str(exc)), hint=exc.hint) from None

    async def _restore(self, before: Mapping[str, ServerState]) -> None:
        commands: list[str] = []
        for servers in self.pool_servers.values():
            for srv in servers:
                st = before[srv]
                commands.append(f"set server {self.backend}/{srv} weight {st.weight}")
                commands.append(f"set server {self.backend}/{srv} state {st.state}")
        with contextlib.suppress(RouterError):
            await self._call("; ".join(commands))

    async def _checked_config(
        self, per_server: Mapping[str, int], ready: Mapping[str, bool]
    ) -> str | None:
        """The rewritten config, checked with ``haproxy -c`` when the current one passes
        (not again when it differs from a rewrite that passed only in our weights and states:
        see :data:`_CHECKED_SHAPES`)."""
        if self.config is None:
            return None
        try:
            text = self.config.read_text()
        except OSError as exc:
            raise RouterError(f"cannot read the HAProxy config {self.config}: {exc}") from None
        new = rewrite_config(text, self.backend, per_server, ready)
        if new == text:
            return None
        shape = self._shape(new)
        if _CHECKED_SHAPES.get(str(self.config)) == shape:
            return new  # only our weights and states differ from a rewrite that passed
        tmp = self.config.parent / f".{self.config.name}.tminus-check"
        try:
            tmp.write_text(new)
            checked = await self._check(tmp)
            if checked is not None:
                original = await self._check(self.config)
                if original is None:  # ours broke a config that passed: refuse it
                    raise RouterError(
                        f"haproxy -c rejects the rewritten {self.config.name}: {checked}",
                        hint="nothing was changed",
                    )
            else:
                _CHECKED_SHAPES[str(self.config)] = shape
        finally:
            tmp.unlink(missing_ok=True)
        return new

    def _shape(self, text: str) -> str:
        """``text`` with every pool server at weight 0 and ready: two configs of one shape
        differ only in what :func:`rewrite_config` writes for the pools."""
        servers = [srv for srvs in self.pool_servers.values() for srv in srvs]
        return rewrite_config(
            text, self.backend, dict.fromkeys(servers, 0), dict.fromkeys(servers, True)
        )

    async def _check(self, path: Path) -> str | None:
        """``haproxy -c -f path``: None when valid, else its message (None too when the
        binary is missing: the check is a safety net, not a requirement)."""
        try:
            run = await LocalHost().run(
                [self.haproxy, "-c", "-q", "-f", str(path)], cwd=str(path.parent), timeout=60
            )
        except OSError:
            return None
        if run.exit_status == 127 or run.ok:
            return None
        lines = [ln for ln in (run.stderr or run.stdout).splitlines() if ln.strip()]
        return self._mask(" | ".join(lines[-3:]))[-600:] or f"exit {run.exit_status}"


class HaproxyKind:
    kind: ClassVar[str] = "haproxy"

    def open(self, config: HaproxyRouter, ctx: RouterContext) -> Haproxy:
        return Haproxy(ctx.name, config, ctx)


KIND = HaproxyKind()


def _conforms(impl: Haproxy) -> Router:  # mypy checks Haproxy against the Protocol
    return impl
