"""Keeps an agent registered with its balancer: one Connect stream, snapshots, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import grpc
import structlog
from grpc import aio

from paddler.common.dialer import Dialer
from paddler.common.pool_names import DEFAULT_POOL
from paddler.common.status_interval import STATUS_INTERVAL_S
from paddler.v1 import agent_registry_pb2, agent_registry_pb2_grpc, desired_state_pb2, status_pb2

log = structlog.get_logger(__name__)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0


class StatusSource(Protocol):
    """What the link reports: an agent's servicer (or a simulated agent)."""

    @property
    def name(self) -> str:
        """The agent's name."""
        ...

    @property
    def status_changed(self) -> asyncio.Event:
        """Set on every change: a snapshot goes out at once."""
        ...

    def status(self) -> status_pb2.AgentStatus:
        """The snapshot to send now."""
        ...


class BalancerLink:
    """Dials the balancer, registers, streams a snapshot on each change and every second, and
    hands every desired state the balancer sends to ``on_desired_state``."""

    def __init__(
        self,
        balancer: str,
        advertise: str,
        servicer: StatusSource,
        on_desired_state: Callable[[desired_state_pb2.VersionedDesiredState], None],
        dialer: Dialer | None = None,
        *,
        pool: str = DEFAULT_POOL,
    ) -> None:
        self._balancer = balancer
        self._dialer = dialer or Dialer()
        self._registration = agent_registry_pb2.AgentRegistration(
            name=servicer.name, address=advertise, pool=pool
        )
        self._servicer = servicer
        self._on_desired_state = on_desired_state

    async def run(self) -> None:
        """Stay connected until cancelled, retrying with capped exponential backoff."""
        backoff = BACKOFF_FIRST_S
        said = ""  # each kind of failure is logged once until the agent registers again
        while True:
            async with self._dialer.aio_channel(self._balancer) as channel:
                registered, event, detail = await self._session(channel)
            if registered:
                backoff, said = BACKOFF_FIRST_S, ""
            if event != said:
                log.warning(event, balancer=self._balancer, error=detail)
                said = event
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _session(self, channel: aio.Channel) -> tuple[bool, str, str]:
        """Register and follow one Connect stream until it ends: whether the balancer accepted
        the agent, the event to log and its detail."""
        stub = agent_registry_pb2_grpc.AgentRegistryServiceStub(channel)
        call = stub.Connect(self._messages(), metadata=self._dialer.metadata())
        registered = False
        try:
            async for response in call:
                if response.HasField("accepted"):
                    registered = True
                    log.info(
                        "registered with balancer",
                        balancer=self._balancer,
                        agent_id=response.accepted.agent_id,
                        advertise=self._registration.address,
                    )
                elif response.HasField("desired_state"):
                    self._on_desired_state(response.desired_state)
        except grpc.RpcError as error:
            # The call's own status: a refusal can surface first as a failed send.
            code = await call.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return registered, "balancer refused the agent token", await call.details()
            return registered, "balancer unreachable", str(error)
        return registered, "balancer closed the registration stream", ""

    async def _messages(self) -> AsyncIterator[agent_registry_pb2.ConnectRequest]:
        yield agent_registry_pb2.ConnectRequest(registration=self._registration)
        changed = self._servicer.status_changed
        while True:
            changed.clear()
            yield agent_registry_pb2.ConnectRequest(status=self._servicer.status())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), STATUS_INTERVAL_S)
