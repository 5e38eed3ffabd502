"""Which model names the cluster serves now, and which names a request may use."""

from __future__ import annotations

from collections.abc import Sequence

from paddler.balancer.agent_registry import AgentRegistry
from paddler.common.errors import ModelNotFoundError


class ServedModels:
    """The models of the agents that serve now, plus the operator's aliases (names for
    whatever the cluster serves)."""

    def __init__(self, registry: AgentRegistry, aliases: Sequence[str]):
        self._registry = registry
        self.aliases = tuple(aliases)

    def names(self) -> list[str]:
        """Model names agents serve now, sorted."""
        return sorted(
            {
                agent.status.model
                for agent in self._registry.agents()
                if agent.serving and agent.status.model
            }
        )

    def card(self, name: str) -> dict[str, object]:
        """OpenAI's model object, with the context a request can use under the names clients
        read: ``context_length`` (OpenRouter, LiteLLM), ``max_model_len`` (vLLM) and
        llama-server's ``meta.n_ctx``/``meta.n_ctx_train`` (omitted while no agent serves it)."""
        card: dict[str, object] = {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "paddler",
        }
        context, trained = self._context(name)
        if context:
            card.update(context_length=context, max_model_len=context)
            card["meta"] = {"n_ctx": context, "n_ctx_train": trained}
        return card

    def _context(self, model: str) -> tuple[int, int]:
        """The context a request for ``model`` can count on (the smallest of the agents that
        serve it; for an alias, of all serving agents) and the model's trained context (the
        smallest reported); (0, 0) while none serves."""
        statuses = [
            agent.status
            for agent in self._registry.agents()
            if agent.serving
            and agent.status.context_size
            and (model in self.aliases or agent.status.model == model)
        ]
        if not statuses:
            return 0, 0
        trained = [status.trained_context_size for status in statuses]
        return min(status.context_size for status in statuses), min(trained)

    def any_serving(self) -> bool:
        """Whether at least one agent serves now."""
        return bool(self.names())

    def check(self, model: str) -> str:
        """The model a request naming ``model`` must be served by ("" for an alias: any).

        Raises ModelNotFoundError for a name neither served nor an alias. While no agent
        serves (starting, swapping) the request goes to the buffer, which says why it waits.
        During a rollout from one model to another both are served, each by its own agents.
        """
        served = self.names()
        if model in served or (not served and model not in self.aliases):
            return model
        if model in self.aliases:
            return ""
        raise ModelNotFoundError(model, [*served, *self.aliases])
