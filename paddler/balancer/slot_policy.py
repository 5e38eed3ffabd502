"""Slot-aware routing (``--routing slots``): fewest busy slots, then most free, then take turns;
an agent that holds the start of the request's prompt counts as that many slots less busy as
its prompt tokens cost to prefill (``PREFILL_TOKENS_PER_SLOT`` each), so a conversation's next
turn goes back to the agent that holds its history while that agent has a free slot.

Requests are served strictly in order: once the oldest request finds no free slot, nobody
behind it gets one (a retry that excludes the agents with free slots, or a request for a model
whose agents are full, is passed over). In a
fleet of more than 32 agents a plan weighs a sample of them (see ``candidates``).
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Iterable, Mapping, Sequence

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.candidates import CandidateSampler
from paddler.balancer.prefix_index import PrefixIndex
from paddler.balancer.routing_policy import PendingRequest, Plan
from paddler.balancer.stream_claim import StreamClaim

HOLDERS = 8
"""Agents holding a request's prefix weighed beside a large fleet's sampled candidates."""

PREFILL_TOKENS_PER_SLOT = 256
"""Prompt tokens whose prefill is taken to cost as much as one more busy slot on an agent."""


def pick_agent(
    agents: Iterable[RegisteredAgent],
    request: PendingRequest,
    turn: int,
    planned: Mapping[str, int] | None = None,
    held: Mapping[str, int] | None = None,
) -> RegisteredAgent | None:
    """The agent ``request`` should go to, or None when no agent it accepts has a free slot.

    ``planned`` counts slots already promised to earlier requests, by agent id; ``held`` the
    prompt tokens each agent holds of the request.
    """
    planned = planned or {}
    held = held or {}
    scored = []
    for agent in agents:
        if not request.accepts(agent):
            continue
        extra = planned.get(agent.agent_id, 0)
        free = agent.free_slots() - extra
        if free > 0:
            affinity = held.get(agent.agent_id, 0) / PREFILL_TOKENS_PER_SLOT
            scored.append(((agent.busy_slots + extra - affinity, -free), agent))
    if not scored:
        return None
    best = min(score for score, _ in scored)
    tied = [agent for score, agent in scored if score == best]
    return tied[turn % len(tied)]


class SlotPolicy:
    """The policy of ``--routing slots``: free slots, and the prefixes agents hold."""

    def __init__(self, prefixes: PrefixIndex | None = None) -> None:
        self._turns = itertools.count()
        self._sampler = CandidateSampler()
        self._prefixes = prefixes

    def plan(
        self,
        requests: Sequence[PendingRequest],
        agents: Sequence[RegisteredAgent],
    ) -> Plan:
        """Grants in order until the oldest request left finds no free slot."""
        planned: collections.Counter[str] = collections.Counter()
        grants: list[RegisteredAgent | None] = []
        sampled = self._sampler.candidates(agents)
        by_id = {agent.agent_id: agent for agent in agents} if len(sampled) < len(agents) else {}
        for request in requests:
            held = held_tokens(self._prefixes, request)
            candidates = with_holders(sampled, held, by_id)
            agent = pick_agent(candidates, request, next(self._turns), planned, held)
            if agent is None and not request.restricted:
                break  # no free slot anywhere: nobody behind can have one either
            if agent is not None:
                planned[agent.agent_id] += 1
            grants.append(agent)
        grants.extend([None] * (len(requests) - len(grants)))
        return Plan(grants)

    def finished(self, claim: StreamClaim) -> None:
        """Nothing to learn: slots and prefixes are all this policy reads."""


def held_tokens(prefixes: PrefixIndex | None, request: PendingRequest) -> dict[str, int]:
    """Prompt tokens of ``request`` each agent holding some of its prompt need not prefill."""
    if prefixes is None or not request.demand.chain.hashes:
        return {}
    demand = request.demand
    return {
        agent_id: demand.held_tokens(links)
        for agent_id, links in prefixes.holders(demand.chain).items()
    }


def with_holders(
    sampled: Sequence[RegisteredAgent],
    held: Mapping[str, int],
    by_id: Mapping[str, RegisteredAgent],
) -> Sequence[RegisteredAgent]:
    """The sampled candidates of a large fleet (``by_id``: all its agents; empty when every
    agent is a candidate) and the ``HOLDERS`` agents that hold the most of the request's
    prompt."""
    if not by_id or not held:
        return sampled
    present = {agent.agent_id for agent in sampled}
    deepest = heapq.nlargest(
        HOLDERS, (agent_id for agent_id in held if agent_id not in present), key=held.__getitem__
    )
    extra = [by_id[agent_id] for agent_id in deepest if agent_id in by_id]
    return [*sampled, *extra] if extra else sampled
