"""The round-robin baseline: each request's agent follows from its arrival number alone."""

from __future__ import annotations

import asyncio
import typing

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.round_robin_policy import RoundRobinPolicy
from paddler.balancer.routing_policy import PendingRequest, RoutingName
from paddler.balancer.slot_policy import SlotPolicy
from paddler.balancer.speed_policy import SpeedPolicy
from paddler.balancer.stream_claim import Demand, StreamClaim
from paddler.processes.balancer import routing_policy
from paddler.v1 import desired_state_pb2, status_pb2

NO_STATE = desired_state_pb2.VersionedDesiredState()


async def _agents(registry: AgentRegistry, slots: dict[str, int]) -> list[RegisteredAgent]:
    agents: list[RegisteredAgent] = []
    for name, count in slots.items():
        agent = await registry.add(name, f"127.0.0.1:{3000 + len(agents)}")
        registry.update(agent, status_pb2.AgentStatus(slots_total=count, ready=True))
        agents.append(agent)
    return agents


def _names(plan: list[RegisteredAgent | None]) -> list[str | None]:
    return [agent.name if agent else None for agent in plan]


def test_requests_take_turns_and_wait_for_their_own_agent() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        big, small = await _agents(registry, {"big": 3, "small": 1})
        small.streams.add(StreamClaim(small, Demand()))  # small is full
        turns = [a.name for a in sorted([big, small], key=lambda a: a.agent_id)]
        requests = [PendingRequest(number=n) for n in range(4)]
        plan = RoundRobinPolicy().plan(requests, registry.agents())
        # Requests whose turn is the full agent wait; the ones behind them for big pass.
        assert _names(plan.grants) == ["big" if turns[n % 2] == "big" else None for n in range(4)]
        assert _names(plan.grants).count("big") == 2

    asyncio.run(scenario())


def test_a_retry_skips_the_agent_it_excludes_and_no_agent_gets_more_than_its_slots() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        first, _ = await _agents(registry, {"a": 1, "b": 1})
        retry = PendingRequest(exclude=frozenset({first.agent_id}), number=0)
        plan = RoundRobinPolicy().plan([retry], registry.agents())
        assert _names(plan.grants) == ["b"]
        same_turn = [PendingRequest(number=0), PendingRequest(number=2)]
        plan = RoundRobinPolicy().plan(same_turn, registry.agents())
        assert plan.grants[0] is not None
        assert plan.grants[1] is None  # one slot, promised to the first

    asyncio.run(scenario())


def test_every_routing_name_has_its_own_policy() -> None:
    names = typing.get_args(RoutingName)
    assert {type(routing_policy(name)) for name in names} == {
        SlotPolicy,
        SpeedPolicy,
        RoundRobinPolicy,
    }
