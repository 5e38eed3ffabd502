"""Which model names the cluster serves now, and which names a request may use."""

from __future__ import annotations

from collections.abc import Sequence

from paddler.balancer.agent_registry import AgentRegistry
from paddler.balancer.state_store import StateStore
from paddler.common.errors import ModelNotFoundError


class ServedModels:
    """The models of the agents that serve the desired state, plus the operator's aliases."""

    def __init__(self, registry: AgentRegistry, states: StateStore, aliases: Sequence[str]):
        self._registry = registry
        self._states = states
        self.aliases = tuple(aliases)

    def names(self) -> list[str]:
        """Model names agents serve now, sorted."""
        desired = self._states.current
        return sorted(
            {
                agent.status.model
                for agent in self._registry.agents()
                if agent.serves(desired) and not agent.retired and agent.status.model
            }
        )

    def any_serving(self) -> bool:
        """Whether at least one agent serves the desired state now."""
        return bool(self.names())

    def check(self, model: str) -> None:
        """Raise ModelNotFoundError for a name neither served nor an alias. While no agent
        serves (starting, swapping) the request goes to the buffer, which says why it waits."""
        served = self.names()
        if served and model not in served and model not in self.aliases:
            raise ModelNotFoundError(model, [*served, *self.aliases])
