"""The balancer's slot dispatcher and registry as a unit: FIFO grants, exclusions, timeouts.

These drive the real AgentRegistry, StateStore and SlotDispatcher with status snapshots
written by the test (no agent process is involved: the scheduling logic alone is under test).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.model_routes import Route
from paddler.balancer.registry_servicer import reachable_address
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.state_store import StateStore
from paddler.common.errors import ModelNotFoundError, UnavailableError
from paddler.common.pool_names import DEFAULT_POOL
from paddler.v1 import desired_state_pb2, status_pb2

GEMMA = Route(model="gemma")


async def _agent(
    registry: AgentRegistry,
    name: str,
    slots: int,
    applied: desired_state_pb2.VersionedDesiredState | None = None,
    phase: status_pb2.StatePhase.ValueType = status_pb2.STATE_PHASE_APPLIED,
) -> RegisteredAgent:
    agent = await registry.add(name, f"127.0.0.1:{1000 + len(registry.agents())}")
    status = status_pb2.AgentStatus(name=name, slots_total=slots, ready=True, phase=phase)
    if applied is not None:
        status.applied_state_version = applied.version
        status.applied_state_epoch = applied.epoch
    registry.update(agent, status)
    return agent


def _setup(timeout_s: float = 5) -> tuple[AgentRegistry, StateStore, SlotDispatcher]:
    registry = AgentRegistry()
    states = StateStore(None)
    return registry, states, SlotDispatcher(registry, states, 10, timeout_s)


def test_slots_go_to_waiters_in_arrival_order() -> None:
    async def scenario() -> list[int]:
        registry, _, dispatcher = _setup()
        agent = await _agent(registry, "solo", 1)
        held = await dispatcher.acquire(None)
        order: list[int] = []

        async def wait(index: int) -> None:
            got = await dispatcher.acquire(None)
            order.append(index)
            dispatcher.release(got)

        waiters = []
        for index in range(4):
            waiters.append(asyncio.create_task(wait(index)))
            await asyncio.sleep(0)
        assert dispatcher.buffered == 4
        dispatcher.release(held)
        await asyncio.gather(*waiters)
        assert agent.claims == 0
        return order

    assert asyncio.run(scenario()) == [0, 1, 2, 3]


def test_a_retry_that_excludes_the_free_agent_holds_up_nobody() -> None:
    async def scenario() -> None:
        registry, _, dispatcher = _setup()
        first = await _agent(registry, "first", 1)
        second = await _agent(registry, "second", 1)
        on_second = await dispatcher.acquire(None, frozenset({first.agent_id}))
        assert on_second.agent is second
        retry = asyncio.create_task(
            dispatcher.acquire(None, frozenset({first.agent_id}), retry=True)
        )
        await asyncio.sleep(0)
        newcomer = await asyncio.wait_for(dispatcher.acquire(None), 1)
        assert newcomer.agent is first  # served although the retry waits ahead of it
        dispatcher.release(on_second)
        assert (await retry).agent is second

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_and_returns_a_late_grant() -> None:
    async def scenario() -> None:
        registry, _, dispatcher = _setup()
        agent = await _agent(registry, "solo", 1)
        held = await dispatcher.acquire(None)
        waiting = asyncio.create_task(dispatcher.acquire(None))
        await asyncio.sleep(0)
        dispatcher.release(held)  # the grant is made ...
        waiting.cancel()  # ... and the client leaves before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (agent.claims, dispatcher.buffered) == (0, 0)

    asyncio.run(scenario())


def test_agents_serve_the_state_they_have_until_they_apply_the_new_one() -> None:
    async def scenario() -> None:
        registry, states, dispatcher = _setup(timeout_s=0.2)
        # v1 of an earlier run of a balancer without a state file, and an agent applying the
        # new state while its old model still serves: both take requests.
        earlier = desired_state_pb2.VersionedDesiredState(version=1, epoch="earlier-run")
        stale = await _agent(registry, "stale", 1, earlier)
        gemma = desired_state_pb2.ModelSource(packaged="gemma3-270m")
        current = states.set(desired_state_pb2.DesiredState(model=gemma))
        applying = await _agent(registry, "applying", 1, current, status_pb2.STATE_PHASE_APPLYING)
        claims = [await dispatcher.acquire(None) for _ in range(2)]
        assert {claim.agent for claim in claims} == {stale, applying}

    asyncio.run(scenario())


def test_an_agent_without_a_model_serves_nothing_and_the_timeout_says_why() -> None:
    async def scenario() -> None:
        registry, states, dispatcher = _setup(timeout_s=0.2)
        gemma = desired_state_pb2.ModelSource(packaged="gemma3-270m")
        states.set(desired_state_pb2.DesiredState(model=gemma))
        loading = await _agent(registry, "loading", 4, phase=status_pb2.STATE_PHASE_APPLYING)
        loading.status.ready = False
        with pytest.raises(UnavailableError) as caught:
            await dispatcher.acquire(None)
        assert caught.value.reason == "NO_AGENT_SERVES_DESIRED_STATE"
        assert "`paddler agents` or the admin panel" in caught.value.message
        assert "not applied yet" not in caught.value.message  # the issues go to the log only
        new = await _agent(registry, "new", 1, states.current)
        assert (await dispatcher.acquire(None)).agent is new

    asyncio.run(scenario())


def test_a_request_for_a_model_goes_only_to_its_agents() -> None:
    async def scenario() -> None:
        registry, _, dispatcher = _setup(timeout_s=0.2)
        smollm = await _agent(registry, "smollm", 1)
        smollm.status.model = "smollm"
        gemma = await _agent(registry, "gemma", 1)
        gemma.status.model = "gemma"
        held = await dispatcher.acquire(None, route=GEMMA)
        assert held.agent is gemma
        waiting = asyncio.create_task(dispatcher.acquire(None, route=GEMMA))
        await asyncio.sleep(0)
        assert dispatcher.buffered == 1  # smollm's free slot is not for it ...
        assert (await dispatcher.acquire(None)).agent is smollm  # ... and nobody waits on it
        dispatcher.release(held)
        assert (await waiting).agent is gemma
        assert dispatcher.most_served_model(DEFAULT_POOL) == "gemma"  # a tie: the first name
        gemma.status.model = "gemma-v2"  # the model went away (a rollout) while one waited
        with pytest.raises(ModelNotFoundError) as caught:
            await dispatcher.acquire(None, route=GEMMA)
        assert "gemma-v2" in caught.value.message

    asyncio.run(scenario())


def test_a_loopback_address_from_a_remote_agent_takes_the_peer_host() -> None:
    assert reachable_address("127.0.0.1:50052", "ipv4:10.1.2.3:40000") == "10.1.2.3:50052"
    assert reachable_address("0.0.0.0:50052", "ipv4:10.1.2.3:40000") == "10.1.2.3:50052"
    assert reachable_address("127.0.0.1:50052", "ipv4:127.0.0.1:40000") == "127.0.0.1:50052"
    assert reachable_address("agent-0.pods:50052", "ipv4:10.1.2.3:4") == "agent-0.pods:50052"


def test_retries_share_one_buffer_timeout_from_arrival() -> None:
    async def scenario() -> None:
        registry, _, dispatcher = _setup(timeout_s=0.5)
        agent = await _agent(registry, "refusing", 4)
        arrived = time.monotonic()
        first = await dispatcher.acquire(None, arrived_at=arrived)
        dispatcher.release(first)  # say the agent refused: the relay retries ...
        arrived -= 0.6  # ... as if it had done so for longer than the timeout
        with pytest.raises(UnavailableError) as caught:  # ... but not past the timeout
            await dispatcher.acquire(None, retry=True, arrived_at=arrived)
        assert caught.value.reason == "BUFFER_TIMEOUT"
        assert (agent.claims, dispatcher.buffered) == (0, 0)

    asyncio.run(scenario())
