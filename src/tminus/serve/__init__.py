"""``tminus serve``: the always-on part of tminus.

One asyncio process per store owns time for every deploy in it:

- :mod:`.planner` turns a deploy and its plan into timers (notices before the window, the
  window's start, ``during`` updates, ``after_success`` notices, the watch's measurements,
  success metrics due);
- :mod:`.fire` fires a claimed timer once, with the late policy of its kind;
- :mod:`.watch` runs a watch measurement and acts on WARN and CRITICAL;
- :mod:`.workers` runs deploys in worker processes (the same engine as ``tminus resume``);
- :mod:`.server` is the loop: heartbeat, plan, claim and fire timers, drive deploys;
- :mod:`.http` serves ``/healthz`` and ``/metrics``.
"""
