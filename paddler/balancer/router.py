"""Slot-aware choice of an agent: fewest busy slots, then most free, then take turns."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.v1 import desired_state_pb2


def pick_agent(
    agents: Iterable[RegisteredAgent],
    exclude: Collection[str],
    turn: int,
    desired: desired_state_pb2.VersionedDesiredState,
) -> RegisteredAgent | None:
    """The agent a new request should go to, or None when no agent has a free slot.

    Only agents that serve the ``desired`` state count (any ready agent when none is set).
    """
    scored = [
        ((agent.busy_slots, -free), agent)
        for agent in agents
        if agent.agent_id not in exclude and (free := agent.free_slots(desired)) > 0
    ]
    if not scored:
        return None
    best = min(score for score, _ in scored)
    tied = [agent for score, agent in scored if score == best]
    return tied[turn % len(tied)]
