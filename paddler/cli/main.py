"""The ``paddler`` typer application."""

import typer

from paddler.cli.agent import agent

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def paddler() -> None:
    """Paddler: slot-aware serving of llama.cpp models over gRPC."""


app.command()(agent)
