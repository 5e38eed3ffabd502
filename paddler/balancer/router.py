"""Slot-aware choice of an agent: fewest busy slots, then most free, then take turns."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from paddler.balancer.agent_registry import RegisteredAgent


def pick_agent(
    agents: Iterable[RegisteredAgent], exclude: Collection[str], turn: int, desired_version: int
) -> RegisteredAgent | None:
    """The agent a new request should go to, or None when no agent has a free slot.

    Only agents that serve the desired state (``desired_version``; 0 when none is set) count.
    """
    scored = [
        ((agent.busy_slots, -free), agent)
        for agent in agents
        if agent.agent_id not in exclude and (free := agent.free_slots(desired_version)) > 0
    ]
    if not scored:
        return None
    best = min(score for score, _ in scored)
    tied = [agent for score, agent in scored if score == best]
    return tied[turn % len(tied)]
