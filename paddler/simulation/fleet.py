"""Many simulated agents in one process, each with its own gRPC server and balancer link."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, replace

import structlog

from paddler.agent.balancer_link import BalancerLink
from paddler.common.grpc_server import ManagedServer, wait_for_termination_signal
from paddler.simulation.simulated_agent import SimulatedAgent
from paddler.simulation.simulated_speed import SimulatedSpeed
from paddler.v1 import agent_pb2, agent_pb2_grpc, desired_state_pb2

log = structlog.get_logger(__name__)

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name


@dataclass(frozen=True)
class FleetConfig:
    """``agents`` simulated agents of ``slots`` slots; each one's speed factor is drawn
    uniformly from [1, ``max_factor``] (seeded), so the fleet's speeds differ."""

    balancer: str
    agents: int
    slots: int
    speed: SimulatedSpeed
    max_factor: float = 1.0
    seed: int = 1
    host: str = "127.0.0.1"


def fleet_speeds(config: FleetConfig) -> list[SimulatedSpeed]:
    """Every agent's speed, in order: the same for the same seed."""
    chooser = random.Random(config.seed)  # noqa: S311 - a reproducible draw, not a secret
    return [
        replace(config.speed, factor=chooser.uniform(1.0, config.max_factor))
        for _ in range(config.agents)
    ]


def _ignore_desired_state(state: desired_state_pb2.VersionedDesiredState) -> None:
    """A simulated agent serves its simulated model whatever state the balancer sets."""


async def run_fleet(config: FleetConfig) -> None:
    """Start every agent, register each with the balancer; stop on SIGTERM/SIGINT."""
    servers: list[ManagedServer] = []
    links: list[asyncio.Task[None]] = []
    for number, speed in enumerate(fleet_speeds(config)):
        agent = SimulatedAgent(f"sim-{number}", config.slots, speed)
        managed = ManagedServer([AGENT_SERVICE])
        agent_pb2_grpc.add_AgentServiceServicer_to_server(agent, managed.server)
        address = await managed.start(f"{config.host}:0")
        await managed.set_serving(serving=True)
        servers.append(managed)
        link = BalancerLink(config.balancer, address, agent, _ignore_desired_state)
        links.append(asyncio.create_task(link.run()))
    log.info("simulated fleet listening", agents=config.agents, slots=config.slots)
    await wait_for_termination_signal()
    for task in links:
        task.cancel()
    await asyncio.gather(*links, return_exceptions=True)
    await asyncio.gather(*(managed.drain(0) for managed in servers))
    log.info("simulated fleet stopped")
