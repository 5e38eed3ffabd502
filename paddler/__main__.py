"""Run the command-line interface with ``python -m paddler``."""

from paddler.cli.main import app

app()
