"""The speed policy on recorded situations: agent speeds and streams in, the expected choice out.

The step timings below are the ones agents reported on this machine (one llama.cpp thread):
SmolLM2 135M at about 28 ms per token for one stream, no faster per token with more streams
(no gain from batching on one CPU thread); Gemma 3 270M at about 85 ms. The "GPU" agent's
timings grow little with streams, as batching does on an accelerator.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.agent_speed import AgentSpeed
from paddler.balancer.routing_policy import PendingRequest
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.speed_policy import (
    FIRST_TYPICAL_TOKENS,
    SpeedPolicy,
    tokens_left,
)
from paddler.balancer.state_store import StateStore
from paddler.balancer.stream_claim import Demand, StreamClaim
from paddler.v1 import desired_state_pb2, status_pb2

SMOLLM_1_THREAD = {1: 0.028, 2: 0.056, 3: 0.085}
GEMMA_1_THREAD = {1: 0.085, 2: 0.17}
GPU = {1: 0.020, 4: 0.022}
NO_STATE = desired_state_pb2.VersionedDesiredState()
REQUEST = PendingRequest(Demand(prompt_tokens=20, max_tokens=64))


def agent_status(slots: int, timings: dict[int, float] | None) -> status_pb2.AgentStatus:
    status = status_pb2.AgentStatus(slots_total=slots, ready=True)
    for streams, seconds in (timings or {}).items():
        status.step_timings.add(streams=streams, step_seconds=seconds)
    status.prefill_seconds_per_token = 0.002
    return status


async def _agent(
    registry: AgentRegistry,
    name: str,
    slots: int,
    timings: dict[int, float] | None,
    running: Sequence[tuple[int, int | None]] = (),
) -> RegisteredAgent:
    """An agent with ``running`` streams of the balancer's: (tokens relayed, max_tokens)."""
    agent = await registry.add(name, f"127.0.0.1:{2000 + len(registry.agents())}")
    registry.update(agent, agent_status(slots, timings))
    for relayed, cap in running:
        agent.streams.add(StreamClaim(agent, Demand(10, cap), relayed=relayed))
    registry.update(agent, agent_status(slots, timings))
    return agent


def _names(grants: Sequence[RegisteredAgent | None]) -> list[str | None]:
    return [agent.name if agent else None for agent in grants]


def test_without_reported_speeds_the_slot_policy_decides() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "busy", 4, None, [(0, 64)])
        await _agent(registry, "idle", 4, None)
        plan = SpeedPolicy().plan([REQUEST], registry.agents())
        assert _names(plan.grants) == ["idle"]

    asyncio.run(scenario())


def test_a_free_slot_beats_waiting_when_the_first_token_comes_sooner_there() -> None:
    # The fleet where slots lied: 1 slot and 3 slots of the same speed in total. Waiting for
    # the 1-slot agent would finish sooner, but its first token would come later.
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "one-slot", 1, {1: 0.028}, [(54, 64)])  # 10 tokens left
        await _agent(registry, "three-slots", 3, SMOLLM_1_THREAD, [(34, 64)])
        plan = SpeedPolicy().plan([REQUEST], registry.agents())
        assert _names(plan.grants) == ["three-slots"]
        assert plan.recheck_in_s is None

    asyncio.run(scenario())


def test_waits_for_a_fast_agent_about_to_free_a_slot_rather_than_take_a_slow_one() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "smollm", 1, SMOLLM_1_THREAD, [(63, 64)])  # 1 token left
        await _agent(registry, "gemma", 1, GEMMA_1_THREAD)
        plan = SpeedPolicy().plan([REQUEST], registry.agents())
        assert _names(plan.grants) == [None]
        assert plan.recheck_in_s is not None and plan.recheck_in_s > 0

    asyncio.run(scenario())


def test_shares_an_agent_whose_batching_is_free() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "gpu", 4, GPU, [(0, 64), (0, 64), (0, 64)])
        await _agent(registry, "gemma", 2, GEMMA_1_THREAD)
        plan = SpeedPolicy().plan([REQUEST], registry.agents())
        assert _names(plan.grants) == ["gpu"]

    asyncio.run(scenario())


def test_an_idle_fast_agent_beats_an_idle_slow_one() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "gemma", 2, GEMMA_1_THREAD)
        await _agent(registry, "smollm", 2, SMOLLM_1_THREAD)
        policy = SpeedPolicy()
        for _ in range(4):  # whichever agent the rotation starts at
            assert _names(policy.plan([REQUEST], registry.agents()).grants) == ["smollm"]

    asyncio.run(scenario())


def test_the_slow_agent_gets_work_when_the_fast_one_is_far_from_free() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "smollm", 1, SMOLLM_1_THREAD, [(0, 512)])
        await _agent(registry, "gemma", 1, GEMMA_1_THREAD)
        plan = SpeedPolicy().plan([REQUEST], registry.agents())
        assert _names(plan.grants) == ["gemma"]

    asyncio.run(scenario())


def test_an_idle_agent_is_kept_working_rather_than_a_second_stream_that_adds_nothing() -> None:
    # SmolLM2 on one thread with one stream: a second one would be about as soon done as on the
    # idle Gemma, but it adds nothing to SmolLM2's token rate while Gemma's would sit unused.
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "smollm", 2, SMOLLM_1_THREAD, [(0, 64)])
        await _agent(registry, "gemma", 2, GEMMA_1_THREAD)
        policy = SpeedPolicy()
        for _ in range(2):  # whichever agent the rotation starts at
            assert _names(policy.plan([REQUEST], registry.agents()).grants) == ["gemma"]
        # With both busy the second streams add nothing anywhere: completion decides again.
        await _agent(registry, "gemma-busy", 2, GEMMA_1_THREAD, [(0, 64)])
        busy = [agent for agent in registry.agents() if agent.name != "gemma"]
        assert _names(policy.plan([REQUEST], busy).grants) == ["smollm"]

    asyncio.run(scenario())


def test_a_second_stream_where_batching_pays_counts_as_spare_capacity() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "gpu", 4, GPU, [(0, 64)])
        await _agent(registry, "gemma", 2, GEMMA_1_THREAD)
        plan = SpeedPolicy().plan([REQUEST], registry.agents())
        assert _names(plan.grants) == ["gpu"]

    asyncio.run(scenario())


def test_a_queue_is_planned_in_order_each_seeing_the_slots_planned_before_it() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "smollm", 1, SMOLLM_1_THREAD, [(63, 64)])  # 1 token left
        await _agent(registry, "gemma", 1, GEMMA_1_THREAD)
        plan = SpeedPolicy().plan([REQUEST, REQUEST, REQUEST], registry.agents())
        # The oldest waits a moment for SmolLM; the next would wait behind it, so Gemma's
        # free slot is sooner; the third finds nothing free now.
        assert _names(plan.grants) == [None, "gemma", None]

    asyncio.run(scenario())


def test_an_agent_without_a_reported_speed_counts_as_the_fastest() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "known", 1, SMOLLM_1_THREAD, [(0, 64)])
        await _agent(registry, "new", 1, None)
        plan = SpeedPolicy().plan([REQUEST], registry.agents())
        assert _names(plan.grants) == ["new"]

    asyncio.run(scenario())


def test_excluded_agents_agents_without_a_model_and_other_models_get_nothing() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        fast = await _agent(registry, "fast", 2, SMOLLM_1_THREAD)
        loading = await _agent(registry, "loading", 2, SMOLLM_1_THREAD)
        slow = await _agent(registry, "slow", 2, GEMMA_1_THREAD)
        loading.status.ready = False
        retry = PendingRequest(REQUEST.demand, frozenset({fast.agent_id}))
        plan = SpeedPolicy().plan([retry], registry.agents())
        assert _names(plan.grants) == ["slow"]
        fast.status.model, slow.status.model = "smollm", "gemma"
        for_gemma = PendingRequest(REQUEST.demand, model="gemma")
        for_smollm = PendingRequest(REQUEST.demand, model="smollm")
        plan = SpeedPolicy().plan([for_gemma, for_smollm], registry.agents())
        assert _names(plan.grants) == ["slow", "fast"]

    asyncio.run(scenario())


def test_grants_never_exceed_free_slots() -> None:
    async def scenario() -> None:
        chooser = random.Random(7)
        speeds = [SMOLLM_1_THREAD, GEMMA_1_THREAD, GPU, None]
        for _ in range(200):
            registry = AgentRegistry()
            for index in range(chooser.randint(1, 5)):
                slots = chooser.randint(1, 4)
                running = [
                    (chooser.randint(0, 100), chooser.choice([None, 64, 128]))
                    for _ in range(chooser.randint(0, slots))
                ]
                await _agent(registry, f"a{index}", slots, chooser.choice(speeds), running)
            requests = [REQUEST] * chooser.randint(1, 12)
            plan = SpeedPolicy().plan(requests, registry.agents())
            assert len(plan.grants) == len(requests)
            for agent in registry.agents():
                granted = sum(1 for grant in plan.grants if grant is agent)
                assert granted <= agent.free_slots()

    asyncio.run(scenario())


def test_a_stream_past_its_typical_length_is_expected_to_run_as_long_again() -> None:
    assert tokens_left(10, None, 64.0) == 54.0
    assert tokens_left(100, None, 64.0) == 100.0
    assert tokens_left(100, 120, 64.0) == 20.0
    assert tokens_left(120, 120, 64.0) == 1.0


def test_the_typical_length_follows_completed_streams_only() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        agent = await _agent(registry, "a", 1, SMOLLM_1_THREAD)
        policy = SpeedPolicy()
        policy.finished(StreamClaim(agent, Demand(), relayed=5))  # cancelled: not learnt
        assert policy.typical_tokens == FIRST_TYPICAL_TOKENS
        for _ in range(50):
            policy.finished(StreamClaim(agent, Demand(), relayed=32, completed=True))
        assert 32 <= policy.typical_tokens < 33

    asyncio.run(scenario())


def test_each_pool_learns_its_own_typical_length() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        chat = await _agent(registry, "chat", 1, SMOLLM_1_THREAD)
        long_replies = await registry.add("writer", "127.0.0.1:2999", "writer")
        policy = SpeedPolicy()
        for _ in range(50):
            policy.finished(StreamClaim(long_replies, Demand(), relayed=900, completed=True))
            policy.finished(StreamClaim(chat, Demand(), relayed=32, completed=True))
        assert 32 <= policy.typical("default") < 33
        assert 850 < policy.typical("writer") <= 900

    asyncio.run(scenario())


def test_step_times_between_and_beyond_measured_stream_counts() -> None:
    speed = AgentSpeed.of(agent_status(8, {2: 0.04, 4: 0.06}))
    assert speed is not None
    assert speed.step(1) == 0.04  # never taken as faster than measured
    assert abs(speed.step(3) - 0.05) < 1e-9
    assert abs(speed.step(8) - 0.12) < 1e-9  # beyond: no batching gain assumed
    assert AgentSpeed.of(agent_status(8, None)) is None


def test_a_waiter_kept_for_a_fast_agent_moves_when_its_estimate_grows() -> None:
    # The dispatcher re-plans on the policy's recheck: the fast agent's stream (uncapped)
    # runs on past its typical length, so the wait for it grows and the slow agent wins.
    async def scenario() -> None:
        registry = AgentRegistry()
        fast = await _agent(registry, "fast", 1, SMOLLM_1_THREAD, [(127, None)])
        await _agent(registry, "slow", 1, GEMMA_1_THREAD)
        dispatcher = SlotDispatcher(registry, StateStore(None), 10, 30, SpeedPolicy())
        waiting = asyncio.create_task(dispatcher.acquire(None, demand=REQUEST.demand))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # kept for the fast agent, a token from its typical end
        (running,) = fast.streams
        running.relayed = 400  # it ran on: as long again is expected
        claim = await asyncio.wait_for(waiting, 5)
        assert claim.agent.name == "slow"

    asyncio.run(scenario())


def test_with_no_room_to_wait_a_request_takes_any_free_slot() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "fast", 1, {1: 0.028}, [(63, 64)])  # the policy would wait
        await _agent(registry, "slow", 1, GEMMA_1_THREAD)
        assert SpeedPolicy().plan([REQUEST], registry.agents()).grants == [None]
        dispatcher = SlotDispatcher(registry, StateStore(None), 0, 30, SpeedPolicy())
        claim = await dispatcher.acquire(None, demand=REQUEST.demand)
        assert claim.agent.name == "slow"

    asyncio.run(scenario())
