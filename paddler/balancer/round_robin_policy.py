"""Round robin (``--routing round-robin``): a baseline to compare the other policies with.

It routes as nginx's round robin does over servers that queue on their own: request number n
goes to the n-th serving agent in turn (agents in id order), whatever their slots or speed, and
waits there for a slot while requests for other agents pass it. Not for production: a slow or
full agent gets its share all the same.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.routing_policy import PendingRequest, Plan
from paddler.balancer.stream_claim import StreamClaim


class RoundRobinPolicy:
    """Each request's agent follows from its arrival number alone."""

    def plan(
        self,
        requests: Sequence[PendingRequest],
        agents: Sequence[RegisteredAgent],
    ) -> Plan:
        """Grant each request its turn's agent when that agent has a slot left."""
        serving = sorted((a for a in agents if a.serving), key=lambda a: a.agent_id)
        planned: collections.Counter[str] = collections.Counter()
        grants: list[RegisteredAgent | None] = []
        for request in requests:
            eligible = [a for a in serving if request.accepts(a)]
            if not eligible:
                grants.append(None)
                continue
            agent = eligible[request.number % len(eligible)]
            if agent.free_slots() - planned[agent.agent_id] > 0:
                planned[agent.agent_id] += 1
                grants.append(agent)
            else:
                grants.append(None)
        return Plan(grants)

    def finished(self, claim: StreamClaim) -> None:
        """Nothing to learn: the turn is all this policy reads."""
