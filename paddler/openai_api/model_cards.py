"""OpenAI's model objects for the names the balancer serves (``/v1/models``)."""

from __future__ import annotations

from paddler.balancer.model_routes import ModelRoutes, ServedName
from paddler.common.pool_names import DEFAULT_POOL


def model_card(routes: ModelRoutes, served: ServedName) -> dict[str, object]:
    """OpenAI's model object: ``owned_by`` is the pool that serves the name ("paddler" for the
    pool "default"; ``pool`` names it too), with the context a request can use under the names
    clients read: ``context_length`` (OpenRouter, LiteLLM), ``max_model_len`` (vLLM) and
    llama-server's ``meta.n_ctx``/``meta.n_ctx_train`` (omitted while no agent serves it)."""
    card: dict[str, object] = {
        "id": served.name,
        "object": "model",
        "created": 0,
        "owned_by": "paddler" if served.pool == DEFAULT_POOL else served.pool,
        "pool": served.pool,
    }
    context, trained = routes.context(served.name)
    if context:
        card.update(context_length=context, max_model_len=context)
        card["meta"] = {"n_ctx": context, "n_ctx_train": trained}
    return card
