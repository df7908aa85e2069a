"""`python -m captune` runs the CLI."""

from captune.cli import run

run()
