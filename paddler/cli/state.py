"""``paddler state``: the pools' desired states."""

from __future__ import annotations

import typer

from paddler.cli.state_set import set_state
from paddler.cli.state_show import delete, show

state_app = typer.Typer(
    no_args_is_help=True,
    help="Show, set or delete the pools' desired states.",
    rich_markup_mode=None,
)
state_app.command()(show)
state_app.command("set")(set_state)
state_app.command()(delete)
