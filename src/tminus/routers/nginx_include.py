"""The include file of the nginx router (``tminus.routers.nginx``): rendering a split (and
a cookie route) into it, and reading them back. Pure text, no nginx needed."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from tminus.routers.base import RouterError, split_percent

__all__ = [
    "DEFAULT_KEEPALIVE",
    "parse_include",
    "parse_route",
    "pool_upstream",
    "render_include",
    "route_variable",
]

_HEADER = "# Written by tminus (router {router!r}): every change here is overwritten.\n"
_UPSTREAM = re.compile(r"^\s*upstream\s+(\S+)\s*\{(.*?)\}", re.S | re.M)
_SERVER = re.compile(r"^\s*server\s+(\S+)([^;]*);", re.M)
_MAP = re.compile(r"^\s*map\s+\$cookie_(\w+)\s+\$(\w+)\s*\{(.*?)\}", re.S | re.M)
_MAP_ENTRY = re.compile(r"^\s*(\"[^\"]*\"|\S+)\s+(\S+)\s*;", re.M)

#: Idle upstream keep-alive connections each nginx worker keeps (nginx's ``keepalive``).
DEFAULT_KEEPALIVE = 32


def route_variable(upstream: str) -> str:
    """The map's variable for ``proxy_pass`` (nginx variable names are ``[A-Za-z0-9_]``)."""
    return "tminus_" + re.sub(r"[^A-Za-z0-9_]", "_", upstream) + "_route"


def pool_upstream(upstream: str, pool: str) -> str:
    return f"{upstream}__{pool}"


def _server_weights(weights: Mapping[str, int], pools: Mapping[str, list[str]]) -> dict[str, int]:
    """Per-server integer weights in exact proportion (0 = marked ``down``)."""
    scale = math.lcm(*(len(servers) for servers in pools.values()))
    raw: dict[str, int] = {}
    for pool, servers in pools.items():
        for addr in servers:
            raw[addr] = weights.get(pool, 0) * scale // len(servers)
    common = math.gcd(*[w for w in raw.values() if w]) or 1
    return {addr: w // common for addr, w in raw.items()}


def render_include(
    router: str,
    upstream: str,
    pools: Mapping[str, list[str]],
    weights: Mapping[str, int],
    cookie: str | None = None,
    route: str | None = None,
    value: str | None = None,
    keepalive: int = DEFAULT_KEEPALIVE,
) -> str:
    """The include file for a split (and a cookie route, with ``cookie``: for any non-empty
    value of the cookie, or with ``value`` for that value only); ``keepalive``: idle upstream
    connections per worker in each upstream (0: none)."""
    per_server = _server_weights(weights, pools)
    keep = [f"    keepalive {keepalive};"] if keepalive > 0 else []
    lines = [
        _HEADER.format(router=router).rstrip("\n"),
        "# split: " + ", ".join(f"{p} {weights.get(p, 0)}%" for p in pools),
        f"upstream {upstream} {{",
    ]
    for servers in pools.values():
        for addr in servers:
            w = per_server[addr]
            lines.append(f"    server {addr} weight={w};" if w else f"    server {addr} down;")
    lines += [*keep, "}"]
    if cookie:
        for pool, servers in pools.items():
            lines.append(f"upstream {pool_upstream(upstream, pool)} {{")
            lines += [f"    server {addr};" for addr in servers]
            lines += [*keep, "}"]
        lines.append(f"map $cookie_{cookie} ${route_variable(upstream)} {{")
        if route is None:
            lines.append(f"    default {upstream};")
        elif value is not None:
            lines.append(f"    default {upstream};")
            lines.append(f'    "{value}" {pool_upstream(upstream, route)};')
        else:
            lines.append(f"    default {pool_upstream(upstream, route)};")
            lines.append(f'    "" {upstream};')
        lines.append("}")
    return "\n".join(lines) + "\n"


def parse_include(
    text: str, upstream: str, pools: Mapping[str, list[str]]
) -> tuple[dict[str, int], str | None]:
    """The split and the cookie route (a pool, or None) written in an include file."""
    pool_of = {addr: pool for pool, servers in pools.items() for addr in servers}
    blocks = {m.group(1): m.group(2) for m in _UPSTREAM.finditer(text)}
    body = blocks.get(upstream)
    if body is None:
        raise RouterError(f"the include file has no 'upstream {upstream}' block")
    amounts = {p: 0.0 for p in pools}
    for m in _SERVER.finditer(body):
        addr, params = m.group(1), m.group(2).split()
        pool = pool_of.get(addr)
        if pool is None:
            raise RouterError(f"server {addr} in upstream {upstream} is in no pool of the router")
        if "down" in params:
            continue
        weight = 1
        for prm in params:
            if prm.startswith("weight="):
                weight = int(prm.removeprefix("weight="))
        amounts[pool] += weight
    return split_percent(amounts), parse_route(text, upstream)


def parse_route(text: str, upstream: str) -> str | None:
    """The pool the include file's cookie map routes to (``None``: no route, or no map)."""
    found = _MAP.search(text)
    if found is None:
        return None
    for entry in _MAP_ENTRY.finditer(found.group(3)):
        value = entry.group(2)
        prefix = f"{upstream}__"
        if value.startswith(prefix):  # `default` (any value) or one quoted value
            return value.removeprefix(prefix)
    return None
