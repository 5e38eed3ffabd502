"""``paddler.v1.AgentRegistryService``: the Connect stream that registers an agent."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc import aio

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.rollout import Rollout
from paddler.common.addresses import is_local_host, join_host_port, parse_peer, split_host_port
from paddler.common.errors import InvalidArgumentError, ResourceExhaustedError
from paddler.common.pool_names import MAX_POOLS, check_pool_name
from paddler.common.status_bounds import MAX_NAME_CHARS, check_registration, check_status
from paddler.v1 import agent_registry_pb2, agent_registry_pb2_grpc

log = structlog.get_logger(__name__)


class AgentRegistryServicer(agent_registry_pb2_grpc.AgentRegistryServiceServicer):
    """An agent is registered for exactly as long as its Connect stream lives.

    The agent's messages are read by a task of their own, so the desired state can be sent
    down the stream at any time.
    """

    def __init__(self, registry: AgentRegistry, rollout: Rollout) -> None:
        self._registry = registry
        self._rollout = rollout

    async def Connect(
        self,
        request_iterator: AsyncIterator[agent_registry_pb2.ConnectRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[agent_registry_pb2.ConnectResponse]:
        """Register on the first message, then apply snapshots while sending desired states.

        A message that cannot be decoded or is out of bounds (see ``status_bounds``) removes
        the agent and ends the stream with INVALID_ARGUMENT.
        """
        name = ""
        try:
            first = await _first(request_iterator)
            if first is None:
                return
            name = first.registration.name
            agent = await self._register(first, context.peer())
            async with contextlib.aclosing(self._serve(agent, request_iterator)) as responses:
                async for response in responses:
                    yield response
        except InvalidArgumentError as violation:
            log.warning(
                "agent registration closed",
                name=name[:MAX_NAME_CHARS],
                peer=context.peer(),
                reason=violation.message,
            )
            raise

    async def _serve(
        self,
        agent: RegisteredAgent,
        request_iterator: AsyncIterator[agent_registry_pb2.ConnectRequest],
    ) -> AsyncGenerator[agent_registry_pb2.ConnectResponse, None]:
        """Send the acceptance, then the desired states the rollout sends (the first once the
        agent's first snapshot says what it serves), until the stream or the registration ends;
        then remove the agent, and raise the violation that ended the stream, if one did."""
        reader = asyncio.create_task(self._read_statuses(agent, request_iterator))
        try:
            accepted = agent_registry_pb2.RegistrationAccepted(agent_id=agent.agent_id)
            yield agent_registry_pb2.ConnectResponse(accepted=accepted)
            while (message := await agent.outbox.get()) is not None:
                yield message
        finally:
            violation = await _stopped(reader)
            reason = violation.message if violation else "registration stream closed"
            await self._registry.remove(agent, reason)
        if violation is not None:
            raise violation

    async def _read_statuses(
        self,
        agent: RegisteredAgent,
        request_iterator: AsyncIterator[agent_registry_pb2.ConnectRequest],
    ) -> InvalidArgumentError | None:
        """Apply each snapshot until the stream ends; the violation that ended it, if any."""
        try:
            async for message in request_iterator:
                if message.HasField("status"):
                    check_status(message.status)
                    self._registry.update(agent, message.status)
                    self._rollout.reported(agent)
        except grpc.RpcError:
            pass  # the agent is gone: ending the stream removes it
        except DecodeError as error:
            return InvalidArgumentError("status", f"undecodable: {error}")
        except InvalidArgumentError as violation:
            return violation
        finally:
            agent.outbox.put_nowait(None)
        return None

    async def _register(
        self, message: agent_registry_pb2.ConnectRequest, peer: str
    ) -> RegisteredAgent:
        if not message.HasField("registration"):
            raise InvalidArgumentError("registration", "the first message must be a registration")
        check_registration(message.registration)
        pool = check_pool_name(message.registration.pool, "registration.pool")
        known = {*self._rollout.states.pools(), *(a.pool for a in self._registry.agents())}
        if pool not in known and len(known) >= MAX_POOLS:
            raise ResourceExhaustedError(
                f"the balancer has {MAX_POOLS} pools, the most it keeps: the agent's pool "
                f"{pool!r} would be one more",
                retry_after_s=5.0,
            )
        address = reachable_address(message.registration.address, peer)
        return await self._registry.add(message.registration.name, address, pool)


async def _first(
    request_iterator: AsyncIterator[agent_registry_pb2.ConnectRequest],
) -> agent_registry_pb2.ConnectRequest | None:
    """The stream's first message; None when it ended without one."""
    try:
        return await anext(request_iterator, None)
    except DecodeError as error:
        raise InvalidArgumentError("registration", f"undecodable: {error}") from None


async def _stopped(
    reader: asyncio.Task[InvalidArgumentError | None],
) -> InvalidArgumentError | None:
    """Cancel ``reader`` unless it ended; the violation it ended on, if any."""
    reader.cancel()
    try:
        return await reader
    except asyncio.CancelledError:
        return None


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
