"""Commands on deploys (the engine): filled in by the engine."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
