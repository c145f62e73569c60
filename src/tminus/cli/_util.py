"""CLI plumbing: exit codes and the decorator that turns exceptions into clean messages."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from tminus.errors import TminusError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_DONE",
    "EXIT_FAILED",
    "EXIT_LOCKED",
    "EXIT_WAITING",
    "fail",
    "handle_errors",
    "state_option",
]

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_WAITING = 3
EXIT_LOCKED = 4

P = ParamSpec("P")
R = TypeVar("R")


#: ``--state``: the one state-store option of every command that reads or writes deploys.
state_option = click.option(
    "--state",
    "state_url",
    envvar="TMINUS_STATE",
    default=None,
    help="State store URL (default sqlite:///.tminus/state.db, or postgresql://…).",
)


def fail(message: str, code: int = EXIT_BAD_INPUT, hint: str | None = None) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Map tminus errors to their exit codes; never show a traceback unless TMINUS_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except TminusError as exc:
            if os.environ.get("TMINUS_DEBUG"):
                raise
            fail(str(exc), exc.exit_code, exc.hint)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # pragma: no cover - last resort: a clean line, not a trace
            if os.environ.get("TMINUS_DEBUG"):
                raise
            fail(
                f"internal error: {type(exc).__name__}: {exc}",
                1,
                "re-run with TMINUS_DEBUG=1 for a traceback and report it",
            )

    return wrapper


def echo_json(data: Any) -> None:
    import json

    click.echo(json.dumps(data, indent=2, default=str))
