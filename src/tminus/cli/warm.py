"""A warm worker: a Python process that has imported the engine already and waits for the one
run it will do (``python -m tminus.cli.warm``).

Starting ``tminus resume`` cold costs a new interpreter and the engine's imports, about half a
second on an idle machine of two cores and more on a busy one: most of the time between an
approval and the deploy going on. The server keeps one warm worker ready and hands it the next
run as one JSON line on its stdin: ``{"argv": [...], "log": PATH}``. The worker sends its
output to ``log`` and runs the CLI with ``argv``, exactly as a cold ``tminus …`` would.
An empty line (the server closing the pipe) ends it without running anything.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

__all__ = ["serve_one"]


#: A plan that validates (never run): it builds the plan validator in the warm worker.
_WARM_PLAN = (
    "name: warm\nenvironment: warm\nphases:\n"
    "  - name: a\n    steps:\n      - {kind: wait, duration: 1s}\n"
)


def _preload() -> None:
    """Import what a resume or a rollback needs, before the run is known."""
    import tminus.cli.app
    import tminus.engine.after_run
    import tminus.engine.runner
    import tminus.steps.registry  # noqa: F401
    from tminus.engine.specs import _step_adapter
    from tminus.plan.loader import load_plan_text

    # The validators built on first use (plan models are defer_build): the run's plan, and
    # the recorded steps of a rollback. Built now, they cost the run nothing.
    load_plan_text(_WARM_PLAN, "warm.yaml")
    _step_adapter()


def serve_one(entry: Callable[[], None]) -> None:
    _preload()
    line = sys.stdin.readline()
    if not line.strip():
        return
    job = json.loads(line)
    fd = os.open(job["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.argv = ["tminus", *job["argv"]]
    entry()


def main() -> None:
    from tminus.cli.app import main as cli_main

    serve_one(cli_main)


if __name__ == "__main__":
    main()
