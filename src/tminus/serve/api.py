"""The HTTP API of ``tminus serve`` (``/api/v1``): the deploys of the server's store, their
events (paged, and live as Server-Sent Events), and the operator's actions: the same
operations as the CLI, through the same engine functions.

- Reads: ``GET /api/v1/deploys`` (filters ``state``, ``plan``, ``environment``; ``offset``,
  ``limit``), ``/deploys/{id}`` (what ``tminus status`` shows), ``/deploys/{id}/events``
  (``after``, ``limit``), ``/deploys/{id}/stream`` (SSE; ``Last-Event-ID`` resumes),
  ``/measurements``, ``/watch``, ``/artifacts``, ``/notifications``, ``/report``.
- Actions (``POST``): ``approve``, ``promote``, ``confirm``, ``pause``, ``resume``, ``abort``,
  ``rollback``; ``GET/POST /api/v1/plans`` lists and registers plans (by path or uploaded,
  checked first), ``POST /api/v1/plans/{plan}/{environment}/deploys`` starts one.

Who may do what is :mod:`tminus.serve.auth`'s business: every route here needs a caller, reads
need *viewer* on the deploy's plan and environment, actions *operator*, approvals *approver*
(and the plan's role rule, separation of duties included, as on the CLI). Every action is
recorded in the deploy's event log with the person, the source address and the user agent:
``api.action``, except an approval or a promotion, whose own ``approval.given`` event (one
transaction with the approval) carries them and the action.

Actions that need a runner (resume, rollback, an abort with no live runner, a start) run in a
worker process of the server (``Server.run_for``), as the person who asked: the response
comes when the worker has ended or after :data:`EARLY_S` seconds, whichever is first (202 then:
follow the stream). An engine refusal (a deploy that has ended, a phase that does not exist)
is a 409 with the CLI's message and hint.

Handlers are coroutines: they run on the server's loop thread, the only thread that uses its
store. The routes live in ``api_reads``, ``api_stream``, ``api_actions`` and ``api_plans``, on
the router of ``api_common`` (with the helpers they share).
"""

from __future__ import annotations

# the routes are defined in these modules, on api_common's router (imported for that)
from tminus.serve import api_actions, api_plans, api_reads, api_stream
from tminus.serve.api_common import EARLY_S, router

__all__ = ["EARLY_S", "api_actions", "api_plans", "api_reads", "api_stream", "router"]
