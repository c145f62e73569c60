"""``source: haproxy``: backend or server statistics from an HAProxy router's stats socket.

The row is the ``BACKEND`` row of ``backend`` (default: the router's backend), or the row of
``server`` in it. Values (``metric:`` picks one; default ``5xx_rate``):

- ``5xx_rate``: responses with a 5xx status / all responses (``hrsp_1xx`` … ``hrsp_other``)
  SINCE THE PREVIOUS MEASUREMENT of the same check, so that each measurement covers one
  interval; the first one covers everything since HAProxy started (or its counters were
  cleared). No response in the interval: no data (inconclusive).
- ``responses``, ``5xx``: the two counts of that interval; ``hrsp_5xx``, ``req_tot``: the
  cumulative counters;
- ``rtime`` / ``ttime``: HAProxy's average response / total time over the last 1024
  requests, in SECONDS (so ``critical: "rtime > 200ms"`` works); ``rtime_ms``, ``ttime_ms``
  as HAProxy reports them;
- ``qcur``, ``scur``, ``econ``, ``eresp``, ``weight``: as in ``show stat``; ``status``: the
  text (``UP``, ``DOWN``, ``MAINT``, ``no check``…).

An unreachable socket, or no such backend or server, is an error measurement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from tminus.plan.checks import HaproxyCheck
from tminus.plan.targets import HaproxyRouter
from tminus.routers.haproxy_api import HaproxyApiError, show_stat
from tminus.sources.base import CheckContext, Measurement, check_name

__all__ = ["SOURCE", "HaproxySource", "row_values"]

_RESPONSE_COLUMNS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
_INT_COLUMNS = ("qcur", "scur", "econ", "eresp", "weight", "hrsp_5xx", "req_tot")


def _int(row: dict[str, str], key: str) -> int:
    try:
        return int(row.get(key) or 0)
    except ValueError:
        return 0


def row_values(row: dict[str, str]) -> dict[str, Any]:
    """The cumulative and instantaneous values of one ``show stat`` row."""
    values: dict[str, Any] = {k: _int(row, k) for k in _INT_COLUMNS}
    values["responses_total"] = sum(_int(row, k) for k in _RESPONSE_COLUMNS)
    for key in ("rtime", "ttime"):
        ms = _int(row, key)
        values[f"{key}_ms"] = ms
        values[key] = ms / 1000.0
    values["status"] = row.get("status", "")
    return values


@dataclass
class _Sample:
    at: float
    responses: int
    errors: int


class HaproxySource:
    source: ClassVar[str] = "haproxy"

    def __init__(self) -> None:
        # (socket, backend, server, check name) -> the previous measurement's counters
        self._previous: dict[tuple[str, str, str, str], _Sample] = {}

    async def measure(self, check: HaproxyCheck, ctx: CheckContext) -> Measurement:
        router = ctx.plan.targets.routers.get(check.router)
        if not isinstance(router, HaproxyRouter):
            return Measurement(error=f"router '{check.router}' is not an haproxy router")
        r = ctx.resolver
        socket = r.resolve(router.socket)
        backend = r.resolve(check.backend) if check.backend else r.resolve(router.backend)
        server = r.resolve(check.server) if check.server else "BACKEND"
        timeout = check.timeout.total_seconds() if check.timeout else 5.0
        try:
            rows = await show_stat(socket, timeout=timeout)
        except HaproxyApiError as exc:
            return Measurement(error=str(exc))
        row = next(
            (x for x in rows if x.get("pxname") == backend and x.get("svname") == server), None
        )
        if row is None:
            known = sorted({x.get("svname", "") for x in rows if x.get("pxname") == backend})
            where = (
                f"server '{server}' in backend '{backend}'"
                if check.server
                else (f"backend '{backend}'")
            )
            hint = f" (its rows: {', '.join(known)})" if known else ""
            return Measurement(error=f"HAProxy at {socket} has no {where}{hint}")
        values = row_values(row)
        now = time.time()
        key = (socket, backend, server, check_name(check))
        prev = self._previous.get(key)
        total, errors = values["responses_total"], values["hrsp_5xx"]
        self._previous[key] = _Sample(now, total, errors)
        if prev is not None and total >= prev.responses and errors >= prev.errors:
            responses, fives = total - prev.responses, errors - prev.errors
            span = f"in the last {now - prev.at:.1f}s"
        else:  # first measurement, or the counters were reset (reload, clear counters)
            responses, fives = total, errors
            span = "since the counters started"
        values["responses"] = responses
        values["5xx"] = fives
        values["5xx_rate"] = fives / responses if responses else None
        metric = check.metric or "5xx_rate"
        if metric not in values:
            return Measurement(
                error=f"haproxy: unknown metric '{metric}'; known: {', '.join(sorted(values))}"
            )
        value = values[metric]
        label = "server " + server if check.server else "backend"
        if value is None:
            return Measurement(
                values=values, no_data=True, message=f"{backend} {label}: no response {span}"
            )
        message = (
            f"{backend} {label}: {fives}/{responses} 5xx {span}, rtime {values['rtime_ms']}ms, "
            f"status {values['status'] or '-'}"
        )
        return Measurement(value=value, values=values, message=message)


SOURCE = HaproxySource()
