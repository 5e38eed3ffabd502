"""Which pool serves a request: the model name it gives, resolved against the pools' names and
aliases, the balancer's ``--model-alias`` names and the models agents serve."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

from paddler.balancer.agent_registry import AgentRegistry
from paddler.balancer.state_store import StateStore
from paddler.common.errors import InvalidArgumentError, ModelNotFoundError
from paddler.common.pool_names import DEFAULT_POOL

MAX_MODEL_CHARS = 256
"""The longest model name a request may give."""

REMEMBERED_MODELS = 256
"""How many served models' pools are remembered for when their pool serves nothing."""


@dataclass(frozen=True)
class Route:
    """Where a request goes: a pool, and within it only agents serving ``model`` ("": any)."""

    pool: str = DEFAULT_POOL
    model: str = ""


DEFAULT_ROUTE = Route()
"""A request that names no model."""


@dataclass(frozen=True)
class ServedName:
    """A name requests may give, and the pool it routes to."""

    name: str
    pool: str


class ModelRoutes:
    """Resolves model names. A request naming

    - nothing goes to the pool "default";
    - a pool (one with a desired state or agents) or one of its aliases goes to that pool;
    - one of the balancer's ``--model-alias`` names goes to the pool "default";
    - a model agents serve goes to their pool ("default" when it is one of them, else the first
      by name), to those agents only (during a rollout from one model to another both are
      served, each by its own agents);
    - a model agents served before goes to the pool that served it while that pool serves
      nothing (its agents restarting or swapping), and waits in its buffer;
    - any other name is ModelNotFoundError, except while the pool "default" serves nothing
      (starting, swapping): then it waits in that pool's buffer, which says why it waits.
    """

    def __init__(self, registry: AgentRegistry, states: StateStore, aliases: Sequence[str]):
        self._registry = registry
        self._states = states
        self.aliases = tuple(aliases)
        # The pool each model was last served by, the latest ``REMEMBERED_MODELS`` of them.
        self._served_by: collections.OrderedDict[str, str] = collections.OrderedDict()

    def pools(self) -> list[str]:
        """Every pool: "default", those with a stored state and those agents joined, sorted."""
        return sorted({*self._states.pools(), *(a.pool for a in self._registry.agents())})

    def served_models(self) -> dict[str, str]:
        """Models agents serve now, each with its pool (as ``resolve`` picks it), by name."""
        pools: dict[str, set[str]] = {}
        for agent in self._registry.agents():
            if agent.serving and agent.status.model:
                pools.setdefault(agent.status.model, set()).add(agent.pool)
        served = {
            model: DEFAULT_POOL if DEFAULT_POOL in owners else min(owners)
            for model, owners in sorted(pools.items())
        }
        for model, pool in served.items():
            self._served_by[model] = pool
            self._served_by.move_to_end(model)
        while len(self._served_by) > REMEMBERED_MODELS:
            self._served_by.popitem(last=False)
        return served

    def _table(self) -> tuple[dict[str, str], dict[str, str]]:
        """Every name a request may give now and its pool, and the served models among them
        (a name routed to those agents only). Precedence: pool names, then pool aliases, the
        balancer's aliases, served models."""
        served = self.served_models()
        table = dict(served)
        table.update(dict.fromkeys(self.aliases, DEFAULT_POOL))
        pools = self.pools()
        for pool in reversed(pools):
            table.update(dict.fromkeys(self._states.aliases_of(pool), pool))
        table.update((pool, pool) for pool in pools)
        return table, served

    def names(self) -> list[ServedName]:
        """The names to list, each once with its pool: served models, the balancer's aliases,
        the pools other than "default" (which a request names by naming no model) and every
        pool's aliases."""
        table, served = self._table()
        shown = [*served, *self.aliases, *(pool for pool in self.pools() if pool != DEFAULT_POOL)]
        shown.extend(alias for pool in self.pools() for alias in self._states.aliases_of(pool))
        return [ServedName(name, table[name]) for name in dict.fromkeys(shown)]

    def resolve(self, model: str, *, required: bool = False) -> Route:
        """The route of a request naming ``model`` ("": the default pool, unless ``required``:
        OpenAI's ``model`` names one, so "" is a name like any other there)."""
        if not model and not required:
            return DEFAULT_ROUTE
        if len(model) > MAX_MODEL_CHARS:
            raise InvalidArgumentError(
                "model", f"at most {MAX_MODEL_CHARS} characters, got {len(model)}"
            )
        table, served = self._table()
        pool = table.get(model)
        if pool is not None:
            return Route(pool, model if served.get(model) == pool else "")
        before = self._served_by.get(model)
        if before is not None and not self._serving(before):
            return Route(before, model)
        if before is None and not self._serving(DEFAULT_POOL):
            return Route(DEFAULT_POOL, model)
        raise ModelNotFoundError(model, [name.name for name in self.names()])

    def named(self, name: str) -> ServedName:
        """``name`` with its pool if it is listed (``names``) or names a pool; else
        ModelNotFoundError."""
        listed = {served.name: served for served in self.names()}
        if name in listed:
            return listed[name]
        if name in self.pools():
            return ServedName(name, name)
        raise ModelNotFoundError(name, list(listed))

    def _serving(self, pool: str) -> bool:
        return any(agent.serving for agent in self._registry.in_pool(pool))

    def context(self, name: str) -> tuple[int, int]:
        """The context a request naming ``name`` can count on (the smallest of the agents it
        may go to) and the model's trained context (the smallest reported); (0, 0) while none
        of them serves."""
        try:
            route = self.resolve(name)
        except ModelNotFoundError:
            return 0, 0
        statuses = [
            agent.status
            for agent in self._registry.in_pool(route.pool)
            if agent.serving
            and agent.status.context_size
            and (not route.model or agent.status.model == route.model)
        ]
        if not statuses:
            return 0, 0
        trained = [status.trained_context_size for status in statuses]
        return min(status.context_size for status in statuses), min(trained)
