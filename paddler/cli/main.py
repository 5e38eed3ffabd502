"""The ``paddler`` typer application."""

import typer

from paddler.cli.agent import agent
from paddler.cli.agents import agents
from paddler.cli.balancer import balancer
from paddler.cli.embed import embed
from paddler.cli.fleet import fleet
from paddler.cli.generate import chat, generate
from paddler.cli.health import health
from paddler.cli.pools import pools
from paddler.cli.simulated_fleet import simulated_fleet
from paddler.cli.state import state_app

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None)


@app.callback()
def paddler() -> None:
    """Paddler: slot-aware serving of llama.cpp models over gRPC."""


for command in (
    balancer,
    agent,
    fleet,
    generate,
    chat,
    embed,
    agents,
    pools,
    health,
    simulated_fleet,
):
    app.command()(command)
app.add_typer(state_app, name="state")
