"""The ``tminus`` command: one module per noun, composed here. Heavy imports happen inside
commands so ``tminus --help`` stays instant."""

from __future__ import annotations

import click

from tminus import __version__
from tminus.cli import backups as backups_cmds
from tminus.cli import deploy as deploy_cmds
from tminus.cli import hosts as hosts_cmds
from tminus.cli import notify as notify_cmds
from tminus.cli import ops as ops_cmds
from tminus.cli import plan as plan_cmds
from tminus.cli import report as report_cmds
from tminus.cli import serve as serve_cmds
from tminus.cli import status as status_cmds
from tminus.cli import tokens as tokens_cmds

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tminus")
def cli() -> None:
    """tminus: one file for a production deployment plan, checked, rendered and run safely.

    \b
    Exit codes: 0 done, 1 failed (and rolled back), 2 bad input,
                3 waiting (approval, pause or scheduled), 4 locked.
    """


for _cmd in [*plan_cmds.COMMANDS, *hosts_cmds.COMMANDS]:
    cli.add_command(_cmd)
for _cmd in [
    *deploy_cmds.COMMANDS,
    *status_cmds.COMMANDS,
    *ops_cmds.COMMANDS,
    *backups_cmds.COMMANDS,
    *report_cmds.COMMANDS,
    *serve_cmds.COMMANDS,
    *notify_cmds.COMMANDS,
    *tokens_cmds.COMMANDS,
]:
    cli.add_command(_cmd)


def main() -> None:
    import gc
    import signal

    # Start-up builds a few hundred thousand long-lived objects (modules, the plan's pydantic
    # validators): with the default threshold (700) the cyclic collector scans them ~90 times
    # during `tminus check`. Collect young objects every 20,000 allocations instead (#14).
    gc.set_threshold(20_000, 20, 20)

    # `tminus log X | head` ends quietly, like other Unix tools.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    cli(prog_name="tminus")
