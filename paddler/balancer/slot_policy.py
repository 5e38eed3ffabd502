"""Slot-aware routing (``--routing slots``): fewest busy slots, then most free, then take turns.

Requests are served strictly in order: once the oldest request finds no free slot, nobody
behind it gets one (a retry that excludes the agents with free slots, or a request for a model
whose agents are full, is passed over). In a
fleet of more than 32 agents a plan weighs a sample of them (see ``candidates``).
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Iterable, Mapping, Sequence

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.candidates import CandidateSampler
from paddler.balancer.routing_policy import PendingRequest, Plan
from paddler.balancer.stream_claim import StreamClaim


def pick_agent(
    agents: Iterable[RegisteredAgent],
    request: PendingRequest,
    turn: int,
    planned: Mapping[str, int] | None = None,
) -> RegisteredAgent | None:
    """The agent ``request`` should go to, or None when no agent it accepts has a free slot.

    ``planned`` counts slots already promised to earlier requests, by agent id.
    """
    planned = planned or {}
    scored = []
    for agent in agents:
        if not request.accepts(agent):
            continue
        extra = planned.get(agent.agent_id, 0)
        free = agent.free_slots() - extra
        if free > 0:
            scored.append(((agent.busy_slots + extra, -free), agent))
    if not scored:
        return None
    best = min(score for score, _ in scored)
    tied = [agent for score, agent in scored if score == best]
    return tied[turn % len(tied)]


class SlotPolicy:
    """The policy of ``--routing slots``: free slots are the only signal."""

    def __init__(self) -> None:
        self._turns = itertools.count()
        self._sampler = CandidateSampler()

    def plan(
        self,
        requests: Sequence[PendingRequest],
        agents: Sequence[RegisteredAgent],
    ) -> Plan:
        """Grants in order until the oldest request left finds no free slot."""
        planned: collections.Counter[str] = collections.Counter()
        grants: list[RegisteredAgent | None] = []
        agents = self._sampler.candidates(agents)
        for request in requests:
            agent = pick_agent(agents, request, next(self._turns), planned)
            if agent is None and not request.restricted:
                break  # no free slot anywhere: nobody behind can have one either
            if agent is not None:
                planned[agent.agent_id] += 1
            grants.append(agent)
        grants.extend([None] * (len(requests) - len(grants)))
        return Plan(grants)

    def finished(self, claim: StreamClaim) -> None:
        """Nothing to learn: slots are all this policy reads."""
