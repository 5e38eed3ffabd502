"""Why a request for a slot fails: no agent of its pool reads images, or its wait ran out (the
model went away, no agent serves the pool's desired state yet, or the pool is saturated)."""

from __future__ import annotations

import structlog

from paddler.balancer.agent_registry import AgentRegistry
from paddler.balancer.routing_policy import PendingRequest
from paddler.balancer.state_store import StateStore
from paddler.common.errors import (
    ConfigurationError,
    ModelNotFoundError,
    PaddlerError,
    UnavailableError,
)
from paddler.common.pool_names import DEFAULT_POOL

log = structlog.get_logger(__name__)
LOGGED_AGENTS = 8


def check_images(request: PendingRequest, registry: AgentRegistry, states: StateStore) -> None:
    """A request with images fails at once when no agent reads images and the desired
    state names no projector that agents are loading."""
    pool = request.pool
    if not request.demand.images or states.state_of(pool).state.HasField("mmproj"):
        return
    model = request.model
    if not any(
        agent.status.images and (not model or agent.status.model == model)
        for agent in registry.in_pool(pool)
    ):
        raise ConfigurationError(
            "the request has images but no agent reads images: set the desired state's "
            "mmproj (paddler state set --mmproj SOURCE, state.mmproj) or start the agents "
            f"with --mmproj{in_pool(pool)}"
        )


def wait_failed(
    request: PendingRequest, registry: AgentRegistry, states: StateStore, timeout_s: float
) -> PaddlerError:
    """Why a request's --buffered-request-timeout ran out. The agents' issues (local paths,
    download errors) go to the log only: the client's message says where to look."""
    desired = states.state_of(request.pool)
    agents = registry.in_pool(request.pool)
    serving = [agent for agent in agents if agent.serving]
    if request.model and serving and not any(request.accepts(a) for a in serving):
        # The model went away while the request waited (a rollout to another model).
        return ModelNotFoundError(request.model, sorted({a.status.model for a in serving}))
    if desired.version and not serving:
        log.info(
            "no agent serves the desired state",
            pool=request.pool,
            version=desired.version,
            waited_s=timeout_s,
            # The first agents' first issue, cut short: one line per timed-out request.
            issues=[
                f"{a.name} ({a.address}): "
                f"{(a.status.issues[0] if a.status.issues else 'not applied yet')[:256]}"
                for a in agents[:LOGGED_AGENTS]
            ],
            agents=len(agents),
        )
        return UnavailableError(
            f"no agent serves the desired state (v{desired.version}"
            f"{in_pool(request.pool, ' of')}) yet after "
            f"{timeout_s:g} s; an operator can see why with `paddler agents` or the "
            "admin panel",
            reason="NO_AGENT_SERVES_DESIRED_STATE",
        )
    return UnavailableError(
        f"no slot freed within {timeout_s:g} s (--buffered-request-timeout); "
        f"the {pool_words(request.pool)} is saturated, retry later",
        reason="BUFFER_TIMEOUT",
    )


def in_pool(pool: str, word: str = " in") -> str:
    """Words naming ``pool`` in a message, none for the default pool (a one-pool cluster)."""
    return "" if pool == DEFAULT_POOL else f"{word} the pool {pool!r}"


def pool_words(pool: str) -> str:
    """ "the cluster", or "pool NAME" for a pool other than the default."""
    return "cluster" if pool == DEFAULT_POOL else f"pool {pool!r}"
