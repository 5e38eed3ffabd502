"""``paddler.v1.AgentRegistryService``: the Connect stream that registers an agent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.common.errors import InvalidArgumentError
from paddler.v1 import agent_registry_pb2, agent_registry_pb2_grpc


class AgentRegistryServicer(agent_registry_pb2_grpc.AgentRegistryServiceServicer):
    """An agent is registered for exactly as long as its Connect stream lives."""

    def __init__(self, registry: AgentRegistry) -> None:
        self._registry = registry

    async def Connect(
        self,
        request_iterator: AsyncIterator[agent_registry_pb2.ConnectRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[agent_registry_pb2.ConnectResponse]:
        """Register on the first message, then apply every status snapshot."""
        agent: RegisteredAgent | None = None
        try:
            async for message in request_iterator:
                if agent is None:
                    agent = self._register(message)
                    accepted = agent_registry_pb2.RegistrationAccepted(agent_id=agent.agent_id)
                    yield agent_registry_pb2.ConnectResponse(accepted=accepted)
                elif message.HasField("status"):
                    self._registry.update(agent, message.status)
        finally:
            if agent is not None:
                await self._registry.remove(agent, "registration stream closed")

    def _register(self, message: agent_registry_pb2.ConnectRequest) -> RegisteredAgent:
        if not message.HasField("registration"):
            raise InvalidArgumentError("registration", "the first message must be a registration")
        registration = message.registration
        if not registration.name:
            raise InvalidArgumentError("registration.name", "the agent name is empty")
        if not registration.address:
            raise InvalidArgumentError(
                "registration.address", "the address of the agent's AgentService is empty"
            )
        return self._registry.add(registration.name, registration.address, asyncio.current_task())
