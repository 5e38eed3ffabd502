"""What a routing policy is: given the waiting requests and the agents, who goes where now."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from paddler.balancer.agent_registry import RegisteredAgent
from paddler.balancer.stream_claim import Demand, StreamClaim
from paddler.common.pool_names import DEFAULT_POOL

RoutingName = Literal["slots", "speed", "round-robin"]


@dataclass(frozen=True)
class PendingRequest:
    """A request waiting for a slot: its size, the agents it must not go to (a retry's), its
    arrival number (the dispatcher counts requests as they come), the model it must be
    served by ("": any) and its pool."""

    demand: Demand = field(default_factory=Demand)
    exclude: frozenset[str] = frozenset()
    number: int = 0
    model: str = ""
    pool: str = DEFAULT_POOL

    @property
    def restricted(self) -> bool:
        """Whether some serving agents may not take the request."""
        return bool(self.exclude or self.model or self.demand.images)

    def accepts(self, agent: RegisteredAgent) -> bool:
        """Whether the request may go to ``agent`` (if it has a free slot): in its pool, not
        excluded, of the model asked for, and reading images if the request has any."""
        return (
            agent.pool == self.pool
            and agent.agent_id not in self.exclude
            and (not self.model or agent.status.model == self.model)
            and (not self.demand.images or agent.status.images)
        )


@dataclass
class Plan:
    """One entry per request, in order: the agent to claim a slot on now, or None to wait.

    ``recheck_in_s`` asks for another plan after that long even if nothing changes (a request
    waits for a slot that estimates say frees soon, while another agent has one free now)."""

    grants: list[RegisteredAgent | None]
    recheck_in_s: float | None = None


class RoutingPolicy(Protocol):
    """Chooses agents; the dispatcher claims the slots and keeps the requests in order."""

    def plan(
        self,
        requests: Sequence[PendingRequest],
        agents: Sequence[RegisteredAgent],
    ) -> Plan:
        """Grants for ``requests`` (oldest first) on agents with free slots."""
        ...

    def finished(self, claim: StreamClaim) -> None:
        """A stream ended (``claim.completed`` when it ran to its summary)."""
        ...
