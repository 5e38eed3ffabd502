"""``paddler.v1.AgentRegistryService``: the Connect stream that registers an agent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.state_store import StateStore
from paddler.common.addresses import is_local_host, join_host_port, parse_peer, split_host_port
from paddler.common.errors import InvalidArgumentError
from paddler.v1 import agent_registry_pb2, agent_registry_pb2_grpc


class AgentRegistryServicer(agent_registry_pb2_grpc.AgentRegistryServiceServicer):
    """An agent is registered for exactly as long as its Connect stream lives.

    The agent's messages are read by a task of their own, so the desired state can be sent
    down the stream at any time.
    """

    def __init__(self, registry: AgentRegistry, states: StateStore) -> None:
        self._registry = registry
        self._states = states

    async def Connect(
        self,
        request_iterator: AsyncIterator[agent_registry_pb2.ConnectRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[agent_registry_pb2.ConnectResponse]:
        """Register on the first message, then apply snapshots while sending desired states."""
        first = await anext(request_iterator, None)
        if first is None:
            return
        agent = await self._register(first, context.peer())
        reader = asyncio.create_task(self._read_statuses(agent, request_iterator))
        try:
            accepted = agent_registry_pb2.RegistrationAccepted(agent_id=agent.agent_id)
            yield agent_registry_pb2.ConnectResponse(accepted=accepted)
            yield agent_registry_pb2.ConnectResponse(desired_state=self._states.current)
            while (message := await agent.outbox.get()) is not None:
                yield message
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._registry.remove(agent, "registration stream closed")

    async def _read_statuses(
        self,
        agent: RegisteredAgent,
        request_iterator: AsyncIterator[agent_registry_pb2.ConnectRequest],
    ) -> None:
        try:
            async for message in request_iterator:
                if message.HasField("status"):
                    self._registry.update(agent, message.status)
        except grpc.RpcError:
            pass  # the agent is gone: ending the stream below removes it
        finally:
            agent.outbox.put_nowait(None)

    async def _register(
        self, message: agent_registry_pb2.ConnectRequest, peer: str
    ) -> RegisteredAgent:
        if not message.HasField("registration"):
            raise InvalidArgumentError("registration", "the first message must be a registration")
        registration = message.registration
        if not registration.name:
            raise InvalidArgumentError("registration.name", "the agent name is empty")
        if not registration.address:
            raise InvalidArgumentError(
                "registration.address", "the address of the agent's AgentService is empty"
            )
        address = reachable_address(registration.address, peer)
        return await self._registry.add(registration.name, address)


def reachable_address(advertised: str, peer: str) -> str:
    """``advertised``, unless it names a loopback or wildcard host while the agent dialled in
    from elsewhere: then the host it dialled from (``peer`` is gRPC's ``ipv4:HOST:PORT`` or
    ``ipv6:%5BHOST%5D:PORT``)."""
    try:
        host, port = split_host_port(advertised)
    except ValueError:
        return advertised
    dialled_from = parse_peer(peer)
    if dialled_from is not None and is_local_host(host) and not is_local_host(dialled_from[0]):
        return join_host_port(dialled_from[0], port)
    return advertised
