"""``paddler simulated-fleet``: many fake agents (no model) against a real balancer, for scale."""

from __future__ import annotations

from typing import Annotated

import typer
import uvloop

from paddler.cli.options import LogLevelOption
from paddler.common.logging import configure_logging
from paddler.common.status_bounds import MAX_SLOTS
from paddler.simulation.fleet import FleetConfig, run_fleet
from paddler.simulation.simulated_speed import SimulatedSpeed


def simulated_fleet(
    balancer: Annotated[
        str,
        typer.Option(
            envvar="PADDLER_BALANCER", help="The balancer's management address to register at."
        ),
    ] = "127.0.0.1:50053",
    agents: Annotated[
        int, typer.Option(min=1, envvar="PADDLER_SIM_AGENTS", help="Simulated agents.")
    ] = 10,
    slots: Annotated[
        int, typer.Option(min=1, max=MAX_SLOTS, envvar="PADDLER_SLOTS", help="Slots of each agent.")
    ] = 4,
    ttft_base: Annotated[
        float,
        typer.Option(min=0, envvar="PADDLER_SIM_TTFT_BASE", help="Seconds to a first token."),
    ] = 0.05,
    ttft_per_prompt_token: Annotated[
        float,
        typer.Option(
            min=0, envvar="PADDLER_SIM_TTFT_PER_PROMPT_TOKEN", help="Added per prompt word."
        ),
    ] = 0.0005,
    token_time: Annotated[
        float,
        typer.Option(min=0, envvar="PADDLER_SIM_TOKEN_TIME", help="Seconds per token, alone."),
    ] = 0.02,
    growth: Annotated[
        float,
        typer.Option(
            min=0,
            envvar="PADDLER_SIM_GROWTH",
            help="Time per token grows by this share per extra stream decoding.",
        ),
    ] = 0.3,
    max_factor: Annotated[
        float,
        typer.Option(
            min=1,
            envvar="PADDLER_SIM_MAX_FACTOR",
            help="Each agent is slower by a factor drawn from [1, this].",
        ),
    ] = 1.0,
    seed: Annotated[int, typer.Option(envvar="PADDLER_SIM_SEED", help="Seed of the draw.")] = 1,
    log_level: LogLevelOption = "info",
) -> None:
    """Run simulated agents (a fake engine, no model) that register like real ones."""
    configure_logging(log_level)
    speed = SimulatedSpeed(ttft_base, ttft_per_prompt_token, token_time, growth)
    config = FleetConfig(balancer, agents, slots, speed, max_factor, seed)
    uvloop.run(run_fleet(config))
