"""Prefix-aware routing on recorded situations: prefix chains, the index of what agents hold,
and the slot and speed policies weighing a held prefix against waiting.

Speeds are those agents reported on this machine (SmolLM2 135M, one llama.cpp thread: about
28 ms per token for one stream, no faster per token with more; 2 ms of prefill per prompt
token), so a 2,000-token prompt takes an agent about 4 s to prefill.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.prefix_index import WIDE
from paddler.balancer.routing_policy import PendingRequest
from paddler.balancer.slot_dispatcher import SlotDispatcher
from paddler.balancer.slot_policy import SlotPolicy
from paddler.balancer.speed_policy import SpeedPolicy
from paddler.balancer.state_store import StateStore
from paddler.balancer.stream_claim import Demand, StreamClaim
from paddler.common.prefix_chain import (
    BLOCK_CHARS,
    LINKS_PER_PROMPT,
    MAX_PREFIX_HASHES,
    prefix_chain,
    reported_links,
)
from paddler.v1 import generation_pb2, status_pb2
from tests.test_speed_policy import SMOLLM_1_THREAD, agent_status

SYSTEM = "You are a patient tutor who explains each step. " * 160  # about 2,000 tokens


def _conversation(
    *turns: str, tools: Sequence[str] = (), system: str = SYSTEM
) -> generation_pb2.GenerationInput:
    messages = [generation_pb2.ChatMessage(role="system", content=system)]
    for index, text in enumerate(turns):
        role = "user" if index % 2 == 0 else "assistant"
        messages.append(generation_pb2.ChatMessage(role=role, content=text))
    conversation = generation_pb2.Conversation(
        messages=messages, tools=[generation_pb2.Tool(name=name) for name in tools]
    )
    return generation_pb2.GenerationInput(conversation=conversation, max_tokens=64)


FIRST_TURN = _conversation("What is 12 times 7?")
NEXT_TURN = _conversation("What is 12 times 7?", "It is 84.", "And 84 divided by 4?")
OTHER_USER = _conversation("Name a red fruit.")
UNRELATED = _conversation("Name a red fruit.", system="You answer in one word. " * 320)


def _request(generation: generation_pb2.GenerationInput) -> PendingRequest:
    return PendingRequest(Demand.of(generation))


def _status(
    slots: int, timings: dict[int, float] | None, held: Sequence[int] = ()
) -> status_pb2.AgentStatus:
    status = agent_status(slots, timings)
    status.prefix_hashes.extend(held)
    return status


async def _agent(
    registry: AgentRegistry,
    name: str,
    *,
    slots: int = 2,
    timings: dict[int, float] | None = SMOLLM_1_THREAD,
    holds: generation_pb2.GenerationInput | None = None,
    running: Sequence[int] = (),
) -> RegisteredAgent:
    """An agent whose snapshot reports holding ``holds``' prompt, running streams with
    ``running`` tokens left each (64-token streams)."""
    agent = await registry.add(name, f"127.0.0.1:{3000 + len(registry.agents())}")
    for left in running:
        agent.streams.add(StreamClaim(agent, Demand(10, 64), relayed=64 - left))
    held = reported_links(prefix_chain(holds)) if holds is not None else ()
    registry.update(agent, _status(slots, timings, held))
    return agent


def _plan(
    policy: SlotPolicy | SpeedPolicy, request: PendingRequest, registry: AgentRegistry
) -> str:
    [grant] = policy.plan([request], registry.agents()).grants
    return grant.name if grant is not None else "wait"


# ---- chains --------------------------------------------------------------------------------


def test_a_next_turn_shares_the_links_of_the_turn_before() -> None:
    first, later = prefix_chain(FIRST_TURN), prefix_chain(NEXT_TURN)
    assert len(first.hashes) == 2 and len(later.hashes) == 4
    assert later.hashes[:2] == first.hashes
    assert prefix_chain(OTHER_USER).hashes[0] == first.hashes[0]  # the same system prompt
    assert prefix_chain(OTHER_USER).hashes[1] != first.hashes[1]
    with_tools = prefix_chain(_conversation("What is 12 times 7?", tools=["calculator"]))
    assert not set(with_tools.hashes) & set(first.hashes)  # tools render before the messages


def test_a_raw_prompt_is_chained_in_blocks_and_a_longer_prompt_extends_it() -> None:
    text = "".join(f"line {number}: the quick brown fox\n" for number in range(100))
    short = prefix_chain(generation_pb2.GenerationInput(prompt=text))
    longer = prefix_chain(generation_pb2.GenerationInput(prompt=text + "and more text"))
    blocks = len(text) // BLOCK_CHARS
    assert longer.hashes[:blocks] == short.hashes[:blocks]
    assert longer.hashes[blocks] != short.hashes[blocks]  # the last block differs
    assert short.share(blocks) == blocks * BLOCK_CHARS / len(text)
    assert prefix_chain(generation_pb2.GenerationInput(prompt="")).hashes == ()


def test_an_agent_reports_the_whole_prompt_its_shorter_prefixes_and_the_first_link() -> None:
    chain = prefix_chain(_conversation(*[f"turn {number}" for number in range(40)]))
    links = reported_links(chain)
    hashes = chain.hashes
    assert len(links) <= LINKS_PER_PROMPT
    assert links[0] == hashes[-1] and links[-1] == hashes[0]
    assert hashes[-2] in links and hashes[-3] in links and hashes[-5] in links
    assert len(set(links)) == len(links)


# ---- the index -----------------------------------------------------------------------------


def _held(registry: AgentRegistry, generation: generation_pb2.GenerationInput) -> dict[str, int]:
    """Links of ``generation``'s chain each agent holding some of it holds, by agent name."""
    holdings = registry.prefixes.holdings(Demand.of(generation))
    links = {agent.name: holdings.links(agent) for agent in registry.agents()}
    return {name: count for name, count in links.items() if count}


def test_the_index_finds_the_deepest_link_each_agent_holds_and_forgets_what_it_dropped() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        first = await _agent(registry, "first", holds=FIRST_TURN)
        later = await _agent(registry, "later", holds=NEXT_TURN)
        assert _held(registry, NEXT_TURN) == {"first": 2, "later": 4}
        registry.update(first, _status(2, SMOLLM_1_THREAD))  # its slots moved on
        assert _held(registry, NEXT_TURN) == {"later": 4}
        await registry.remove(later, "test")
        assert _held(registry, NEXT_TURN) == {}
        assert len(registry.prefixes) == 0

    asyncio.run(scenario())


def test_a_request_counts_as_held_once_prefilled_until_a_snapshot_says_otherwise() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        dispatcher = SlotDispatcher(registry, StateStore(None), 10, 30, SlotPolicy())
        agent = await _agent(registry, "agent")
        claim = await dispatcher.acquire(None, demand=Demand.of(FIRST_TURN))
        registry.update(agent, _status(2, SMOLLM_1_THREAD))
        assert _held(registry, FIRST_TURN) == {}  # still prefilling: nothing to reuse yet
        claim.relayed = 1  # its first token came: the prompt is in the agent's cache
        registry.update(agent, _status(2, SMOLLM_1_THREAD))
        assert _held(registry, FIRST_TURN) == {"agent": 2}
        dispatcher.release(claim)
        assert _held(registry, FIRST_TURN) == {"agent": 2}  # until the next snapshot
        registry.update(agent, _status(2, SMOLLM_1_THREAD))  # its slot was taken since
        assert _held(registry, FIRST_TURN) == {}

    asyncio.run(scenario())


def test_a_thousand_agents_sharing_a_system_prompt_are_found_without_listing_them() -> None:
    async def scenario() -> None:
        registry = AgentRegistry(max_agents=1000)
        for number in range(1000):
            user = _conversation(*[f"user {number} turn {turn}" for turn in range(12)])
            links = reported_links(prefix_chain(user))
            many = [*links, *range(number * 1000, number * 1000 + MAX_PREFIX_HASHES - len(links))]
            agent = await registry.add(f"agent-{number}", f"127.0.0.1:{10000 + number}")
            registry.update(agent, _status(4, SMOLLM_1_THREAD, many))
        index = registry.prefixes
        assert len(index) <= 1000 * MAX_PREFIX_HASHES
        agents = registry.agents()
        holdings = index.holdings(
            Demand.of(_conversation(*[f"user 500 turn {turn}" for turn in range(13)]))
        )
        # The one agent holding the conversation is listed with its depth (the system prompt
        # and 12 turns); the system prompt all hold is one shared set, not 1000 entries.
        assert holdings.deep == {agents[500]: 13}
        assert [(links, len(holders)) for links, holders in holdings.wide] == [(1, 1000)]
        assert holdings.links(agents[500]) == 13 and holdings.links(agents[7]) == 1
        for agent in agents[: WIDE + 1]:
            registry.update(agent, _status(4, SMOLLM_1_THREAD))
        assert index.holdings(holdings.demand).links(agents[0]) == 0
        assert len(index.holdings(holdings.demand).wide[0][1]) == 1000 - WIDE - 1

    asyncio.run(scenario())


# ---- the slot policy -----------------------------------------------------------------------


def test_slots_a_hot_prefix_on_an_agent_with_a_free_slot_wins_over_an_idle_agent() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        policy = SlotPolicy(registry.prefixes)
        await _agent(registry, "idle", timings=None)
        await _agent(registry, "holder", timings=None, holds=FIRST_TURN, running=[30])
        assert _plan(policy, _request(NEXT_TURN), registry) == "holder"
        assert _plan(policy, _request(OTHER_USER), registry) == "holder"  # the system prompt
        assert _plan(SlotPolicy(), _request(NEXT_TURN), registry) == "idle"  # today's choice

    asyncio.run(scenario())


def test_slots_a_full_holder_or_no_prefix_leaves_the_choice_to_the_free_slots() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        policy = SlotPolicy(registry.prefixes)
        await _agent(registry, "holder", timings=None, holds=FIRST_TURN, running=[30, 30])
        await _agent(registry, "busy", timings=None, running=[30])
        await _agent(registry, "idle", timings=None)
        assert _plan(policy, _request(NEXT_TURN), registry) == "idle"
        unrelated = generation_pb2.GenerationInput(prompt="Once upon a time", max_tokens=8)
        assert _plan(policy, _request(unrelated), registry) == "idle"

    asyncio.run(scenario())


# ---- the speed policy ----------------------------------------------------------------------


def test_speed_a_hot_prefix_on_a_free_agent_wins() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        policy = SpeedPolicy(registry.prefixes)
        await _agent(registry, "idle")
        await _agent(registry, "holder", holds=FIRST_TURN)
        for _ in range(4):  # exact ties would take turns; the prefix is no tie
            assert _plan(policy, _request(NEXT_TURN), registry) == "holder"

    asyncio.run(scenario())


def test_speed_a_holder_with_a_slot_free_but_no_spare_capacity_still_wins() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        policy = SpeedPolicy(registry.prefixes)
        await _agent(registry, "idle")
        await _agent(registry, "holder", holds=FIRST_TURN, running=[20])
        # One CPU thread gains nothing from a second stream, yet 4 s of prefill saved beats
        # decoding alone elsewhere.
        assert _plan(policy, _request(NEXT_TURN), registry) == "holder"
        # Without the prefix, today's choice: keep the idle agent working.
        assert _plan(policy, _request(UNRELATED), registry) == "idle"

    asyncio.run(scenario())


def test_speed_a_hot_prefix_on_a_saturated_agent_is_waited_for_only_while_that_pays() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        policy = SpeedPolicy(registry.prefixes)
        await _agent(registry, "idle")
        holder = await _agent(registry, "holder", holds=FIRST_TURN, running=[5, 5])
        # A slot frees in 0.3 s there; prefilling 2,000 tokens here takes 4 s.
        plan = policy.plan([_request(NEXT_TURN)], registry.agents())
        assert plan.grants == [None] and plan.recheck_in_s is not None
        # Both its streams have 64 tokens left: the wait (3.6 s) and the shared decoding after
        # it cost more than the idle agent's prefill.
        for claim in holder.streams:
            claim.relayed = 0
        assert _plan(policy, _request(NEXT_TURN), registry) == "idle"

    asyncio.run(scenario())


def test_speed_without_a_held_prefix_the_choice_is_todays() -> None:
    async def scenario() -> None:
        registry = AgentRegistry()
        await _agent(registry, "busy", running=[30])
        await _agent(registry, "idle")
        await _agent(registry, "holder", holds=FIRST_TURN, running=[10, 10])
        for policy in (SpeedPolicy(registry.prefixes), SlotPolicy(registry.prefixes)):
            assert _plan(policy, _request(UNRELATED), registry) == "idle"
        with_index = SpeedPolicy(registry.prefixes).plan(
            [_request(UNRELATED)] * 3, registry.agents()
        )
        without = SpeedPolicy().plan([_request(UNRELATED)] * 3, registry.agents())
        assert with_index.grants == without.grants

    asyncio.run(scenario())
