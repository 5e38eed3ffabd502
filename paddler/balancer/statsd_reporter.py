"""Pushes the cluster's gauges to StatsD once a second (``--statsd-addr``), as Paddler does:
slots busy and total over all agents, buffered requests, agents registered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import statsd
import structlog

from paddler.balancer.agent_registry import AgentRegistry
from paddler.common.addresses import split_host_port

log = structlog.get_logger(__name__)

INTERVAL_S = 1.0


async def report_to_statsd(
    address: str, prefix: str, agents: AgentRegistry, buffered: Callable[[], int]
) -> None:
    """Send the gauges every ``INTERVAL_S`` until cancelled."""
    host, port = split_host_port(address)
    client = statsd.StatsClient(host, port, prefix=prefix or None)
    log.info("statsd reporting", address=address, prefix=prefix)
    while True:
        registered = agents.agents()
        pipe = client.pipeline()
        pipe.gauge("slots_busy", sum(agent.busy_slots for agent in registered))
        pipe.gauge("slots_total", sum(agent.status.slots_total for agent in registered))
        pipe.gauge("buffered_requests", buffered())
        pipe.gauge("agents_registered", len(registered))
        pipe.send()
        await asyncio.sleep(INTERVAL_S)
