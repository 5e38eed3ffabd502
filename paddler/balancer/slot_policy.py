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
from paddler.balancer.prefix_index import Holdings, PrefixIndex
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
    held: Holdings | None = None,
) -> RegisteredAgent | None:
    """The agent ``request`` should go to, or None when no agent it accepts has a free slot.

    ``planned`` counts slots already promised to earlier requests, by agent id; ``held`` says
    how much of the request's prompt each agent holds.
    """
    planned = planned or {}
    scored = []
    for agent in agents:
        if not request.accepts(agent):
            continue
        extra = planned.get(agent.agent_id, 0)
        free = agent.free_slots() - extra
        if free > 0:
            affinity = held.tokens(agent) / PREFILL_TOKENS_PER_SLOT if held else 0.0
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
        whole = len(sampled) == len(agents)
        for request in requests:
            held = holdings(self._prefixes, request)
            candidates = sampled if whole else with_holders(sampled, held)
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


def holdings(prefixes: PrefixIndex | None, request: PendingRequest) -> Holdings | None:
    """How much of ``request``'s prompt each agent holds (None: no prompt chain or no index)."""
    if prefixes is None or not request.demand.chain.hashes:
        return None
    return prefixes.holdings(request.demand)


def with_holders(
    sampled: Sequence[RegisteredAgent], held: Holdings | None
) -> Sequence[RegisteredAgent]:
    """The candidates a large fleet's plan sampled, and the ``HOLDERS`` agents holding the most
    of the request's prompt among the few that hold its rarer links."""
    if held is None or not held.deep:
        return sampled
    present = set(sampled)
    deepest = heapq.nlargest(
        HOLDERS, (agent for agent in held.deep if agent not in present), key=held.deep.__getitem__
    )
    return [*sampled, *deepest] if deepest else sampled
