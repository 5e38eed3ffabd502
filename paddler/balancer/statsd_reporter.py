"""Pushes the cluster's gauges to StatsD once a second (``--statsd-addr``), as Paddler does:
slots busy and total over all agents, buffered requests, agents registered."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import statsd
import structlog

from paddler.balancer.agent_registry import AgentRegistry
from paddler.common.addresses import split_host_port

log = structlog.get_logger(__name__)

INTERVAL_S = 1.0


async def report_to_statsd(
    address: str, prefix: str, agents: AgentRegistry, buffered: Callable[[], int]
) -> None:
    """Send the gauges every ``INTERVAL_S`` until cancelled. A send that fails (the host does
    not resolve, the network is down) is logged and tried again a second later."""
    host, port = split_host_port(address)
    log.info("statsd reporting", address=address, prefix=prefix)
    client: Any = None
    while True:
        try:
            if client is None:  # resolves the host: off the event loop
                client = await asyncio.to_thread(statsd.StatsClient, host, port, prefix or None)
            registered = agents.agents()
            pipe = client.pipeline()
            pipe.gauge("slots_busy", sum(agent.busy_slots for agent in registered))
            pipe.gauge("slots_total", sum(agent.status.slots_total for agent in registered))
            pipe.gauge("buffered_requests", buffered())
            pipe.gauge("agents_registered", len(registered))
            pipe.send()
        except OSError as error:
            log.warning("statsd send failed", address=address, error=str(error))
        await asyncio.sleep(INTERVAL_S)
