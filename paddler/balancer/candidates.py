"""The agents a plan weighs in a large fleet: a random sample, so a plan's cost does not grow
with the fleet.

Up to ``CANDIDATES`` agents every agent is weighed. Beyond, a plan weighs that many drawn at
random (the power of d choices); when none of them has a free slot, half are swapped for agents
that have one, found by a scan of the fleet, which only a saturated fleet needs. So a sample
holds a free slot whenever the fleet has one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from paddler.balancer.agent_registry import RegisteredAgent

CANDIDATES = 32


class CandidateSampler:
    """Draws the candidates of each plan (seeded: runs repeat)."""

    def __init__(self, seed: int = 0) -> None:
        self._draw = random.Random(seed)  # noqa: S311 - a sample of agents, not a secret

    def candidates(self, agents: Sequence[RegisteredAgent]) -> Sequence[RegisteredAgent]:
        """All of a small fleet; a sample of a large one, with free slots if any agent has."""
        if len(agents) <= CANDIDATES:
            return agents
        drawn = self._draw.sample(agents, CANDIDATES)
        if any(agent.status.slots_total > agent.busy_slots for agent in drawn):
            return drawn
        roomy = [agent for agent in agents if agent.status.slots_total > agent.busy_slots]
        if not roomy:
            return []  # nothing can be granted: no plan to weigh
        roomy = self._draw.sample(roomy, min(len(roomy), CANDIDATES // 2))
        return list(dict.fromkeys([*roomy, *drawn[: CANDIDATES // 2]]))
