"""``python -m tminus``."""

from tminus.cli.app import main

main()
