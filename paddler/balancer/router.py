"""Slot-aware choice of an agent: fewest busy slots, then most free, then take turns."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from paddler.balancer.agent_registry import RegisteredAgent


def pick_agent(
    agents: Iterable[RegisteredAgent], exclude: Collection[str], turn: int
) -> RegisteredAgent | None:
    """The agent a new request should go to, or None when no agent has a free slot."""
    candidates = [a for a in agents if a.free_slots > 0 and a.agent_id not in exclude]
    if not candidates:
        return None
    best = min((a.busy_slots, -a.free_slots) for a in candidates)
    tied = [a for a in candidates if (a.busy_slots, -a.free_slots) == best]
    return tied[turn % len(tied)]
