"""``paddler.v1.ManagementService``: the agents and the buffer, for operators and the CLI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.model_routes import ModelRoutes
from paddler.balancer.rollout import Rollout
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.common.concurrency_limit import ConcurrencyLimit
from paddler.common.pool_names import check_pool_name
from paddler.v1 import management_pb2, management_pb2_grpc


def _describe(agent: RegisteredAgent, now: float) -> management_pb2.RegisteredAgent:
    status = agent.status
    described = management_pb2.RegisteredAgent(
        agent_id=agent.agent_id,
        name=agent.name,
        address=agent.address,
        slots_total=status.slots_total,
        slots_processing=status.slots_processing,
        slots_claimed=agent.claims,
        model=status.model,
        ready=status.ready,
        phase=status.phase,
        applied_state_version=status.applied_state_version,
        applied_state_epoch=status.applied_state_epoch,
        chat_template=status.chat_template,
        issues=status.issues,
        download=status.download,
        step_timings=status.step_timings,
        rolling=agent.rolling,
        context_size=status.context_size,
        trained_context_size=status.trained_context_size,
        context_source=status.context_source,
        placement=status.placement,
        images=status.images,
        pool=agent.pool,
    )
    described.last_status_age.FromNanoseconds(int((now - agent.last_status_at) * 1e9))
    return described


def describe_pool(
    name: str, registry: AgentRegistry, rollout: Rollout, dispatcher: SlotDispatcher
) -> management_pb2.Pool:
    """The pool ``name`` as it stands now."""
    agents = registry.in_pool(name)
    serving = [agent for agent in agents if agent.serving]
    return management_pb2.Pool(
        name=name,
        aliases=rollout.states.aliases_of(name),
        desired_state=rollout.states.state_of(name),
        rollout=rollout.progress(name),
        agents=len(agents),
        serving=len(serving),
        slots_total=sum(agent.status.slots_total for agent in serving),
        slots_free=sum(agent.free_slots() for agent in serving),
        buffered=dispatcher.buffered_in(name),
        models=sorted({agent.status.model for agent in serving if agent.status.model}),
    )


class ManagementServicer(management_pb2_grpc.ManagementServiceServicer):
    """Views of the balancer's state, and the desired state."""

    def __init__(
        self,
        registry: AgentRegistry,
        dispatcher: SlotDispatcher,
        rollout: Rollout,
        watchers: ConcurrencyLimit,
        routes: ModelRoutes,
    ) -> None:
        self._registry = registry
        self._dispatcher = dispatcher
        self._rollout = rollout
        self._states = rollout.states
        self._watchers = watchers
        self._routes = routes

    def _agents(self) -> list[management_pb2.RegisteredAgent]:
        now = time.monotonic()
        return [_describe(agent, now) for agent in self._registry.agents()]

    async def ListAgents(
        self, request: management_pb2.ListAgentsRequest, context: aio.ServicerContext[Any, Any]
    ) -> management_pb2.ListAgentsResponse:
        """Every registered agent."""
        return management_pb2.ListAgentsResponse(agents=self._agents())

    async def WatchAgents(
        self, request: management_pb2.WatchAgentsRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[management_pb2.WatchAgentsResponse]:
        """The list now, then after every change (at most ``--max-watchers`` at once, the
        admin panel's live views counted too)."""
        with self._watchers.hold():
            changed = asyncio.Event()
            stop_listening = self._registry.listen(changed.set)
            try:
                while True:
                    changed.clear()
                    yield management_pb2.WatchAgentsResponse(agents=self._agents())
                    await changed.wait()
            finally:
                stop_listening()

    async def GetBufferedRequests(
        self,
        request: management_pb2.GetBufferedRequestsRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> management_pb2.GetBufferedRequestsResponse:
        """How many requests wait for a slot (in one pool, or in all), and how many may (in
        each pool)."""
        dispatcher = self._dispatcher
        if request.pool:
            count = dispatcher.buffered_in(check_pool_name(request.pool, "pool"))
        else:
            count = dispatcher.buffered
        return management_pb2.GetBufferedRequestsResponse(count=count, capacity=dispatcher.capacity)

    async def GetDesiredState(
        self,
        request: management_pb2.GetDesiredStateRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> management_pb2.GetDesiredStateResponse:
        """A pool's desired state and its version (0: none set), and its rollout."""
        pool = check_pool_name(request.pool, "pool")
        return management_pb2.GetDesiredStateResponse(
            desired_state=self._states.state_of(pool), rollout=self._rollout.progress(pool)
        )

    async def SetDesiredState(
        self,
        request: management_pb2.SetDesiredStateRequest,
        context: aio.ServicerContext[Any, Any],
    ) -> management_pb2.SetDesiredStateResponse:
        """Validate, store as the pool's next version and roll it out to the pool's agents."""
        aliases = request.aliases.names if request.HasField("aliases") else None
        stored = await self._states.submit(request.state, request.pool, aliases)
        return management_pb2.SetDesiredStateResponse(desired_state=stored)

    async def ListPools(
        self, request: management_pb2.ListPoolsRequest, context: aio.ServicerContext[Any, Any]
    ) -> management_pb2.ListPoolsResponse:
        """Every pool, sorted by name."""
        return management_pb2.ListPoolsResponse(
            pools=[self._pool(name) for name in self._routes.pools()]
        )

    def _pool(self, name: str) -> management_pb2.Pool:
        return describe_pool(name, self._registry, self._rollout, self._dispatcher)

    async def DeletePool(
        self, request: management_pb2.DeletePoolRequest, context: aio.ServicerContext[Any, Any]
    ) -> management_pb2.DeletePoolResponse:
        """Forget a pool no agent is in."""
        pool = check_pool_name(request.pool, "pool")
        self._states.delete(pool, len(self._registry.in_pool(pool)))
        self._rollout.forget(pool)
        return management_pb2.DeletePoolResponse()
