"""Large fleets: both policies weigh a sample of the agents, and still find any free slot."""

from __future__ import annotations

import asyncio
import random

import pytest

from paddler.balancer.agent_registry import AgentRegistry
from paddler.balancer.candidates import CANDIDATES, CandidateSampler
from paddler.balancer.routing_policy import RoutingPolicy
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.slot_policy import SlotPolicy
from paddler.balancer.speed_policy import SpeedPolicy
from paddler.balancer.state_store import StateStore
from paddler.balancer.stream_claim import Demand
from paddler.v1 import status_pb2


def _status() -> status_pb2.AgentStatus:
    status = status_pb2.AgentStatus(slots_total=1, ready=True)
    status.step_timings.add(streams=1, step_seconds=0.028)
    return status


async def _fleet(size: int) -> AgentRegistry:
    registry = AgentRegistry()
    for index in range(size):
        agent = await registry.add(f"a{index}", f"127.0.0.1:{4000 + index}")
        registry.update(agent, _status())
    return registry


@pytest.mark.parametrize("policy", [SlotPolicy, SpeedPolicy], ids=["slots", "speed"])
def test_in_a_large_fleet_a_slot_freed_anywhere_is_found(policy: type[RoutingPolicy]) -> None:
    async def scenario() -> None:
        registry = await _fleet(CANDIDATES * 4)
        dispatcher = SlotDispatcher(registry, StateStore(None), 10, 30, policy())
        demand = Demand(prompt_tokens=20, max_tokens=64)
        claims = [await dispatcher.acquire(None, demand=demand) for _ in registry.agents()]
        assert {claim.agent.name for claim in claims} == {a.name for a in registry.agents()}
        waiting = asyncio.create_task(dispatcher.acquire(None, demand=demand))
        await asyncio.sleep(0)
        assert not waiting.done()
        freed = claims[CANDIDATES * 3 + 5]
        dispatcher.release(freed)
        assert (await asyncio.wait_for(waiting, 5)).agent is freed.agent

    asyncio.run(scenario())


def test_a_sample_holds_a_free_slot_whenever_the_fleet_has_one() -> None:
    async def scenario() -> None:
        registry = await _fleet(CANDIDATES * 10)
        agents = registry.agents()
        sampler = CandidateSampler()
        chooser = random.Random(3)
        for free_count in (0, 1, 2, 50):
            roomy = set(chooser.sample(range(len(agents)), free_count))
            for index, agent in enumerate(agents):
                agent.external_busy = 0 if index in roomy else 1
            sample = sampler.candidates(agents)
            assert len(sample) <= CANDIDATES
            free_in_sample = [a for a in sample if a.status.slots_total > a.busy_slots]
            assert bool(free_in_sample) == bool(roomy)
        assert sampler.candidates(agents[:CANDIDATES]) == agents[:CANDIDATES]

    asyncio.run(scenario())
