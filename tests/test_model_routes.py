"""Which pool a model name routes to: pools, their aliases, the balancer's aliases and the
models agents serve, in that order; what waits while a pool serves nothing; what is refused."""

from __future__ import annotations

import asyncio

import pytest

from paddler.balancer.agent_registry import AgentRegistry, RegisteredAgent
from paddler.balancer.model_routes import ModelRoutes, Route
from paddler.balancer.state_store import StateStore
from paddler.common.errors import InvalidArgumentError, ModelNotFoundError
from paddler.v1 import desired_state_pb2, status_pb2

STATE = desired_state_pb2.DesiredState(model=desired_state_pb2.ModelSource(packaged="gemma3-270m"))


async def _agent(registry: AgentRegistry, model: str, pool: str) -> RegisteredAgent:
    agent = await registry.add(model, f"127.0.0.1:{1000 + len(registry.agents())}", pool)
    registry.update(agent, status_pb2.AgentStatus(slots_total=1, ready=True, model=model))
    return agent


def test_names_route_by_precedence_and_unknown_ones_are_refused() -> None:
    async def scenario() -> None:
        registry, states = AgentRegistry(), StateStore(None)
        states.set(STATE, "gemma", ["chat", "smol"])  # an alias that is also a model's name
        routes = ModelRoutes(registry, states, ["gpt-4o"])
        await _agent(registry, "smol", "default")
        await _agent(registry, "gemma-3", "gemma")
        assert routes.resolve("") == Route()
        assert routes.resolve("gemma") == Route("gemma")
        assert routes.resolve("chat") == Route("gemma")
        assert routes.resolve("smol") == Route("gemma")  # the pool's alias wins
        assert routes.resolve("gpt-4o") == Route()
        assert routes.resolve("gemma-3") == Route("gemma", "gemma-3")
        assert routes.resolve("default") == Route()
        with pytest.raises(ModelNotFoundError):
            routes.resolve("", required=True)  # OpenAI's model names one: "" is no name
        with pytest.raises(ModelNotFoundError) as caught:
            routes.resolve("llama")
        assert "gemma-3, smol, gpt-4o, gemma, chat" in caught.value.message
        with pytest.raises(InvalidArgumentError):
            routes.resolve("x" * 257)
        assert [(n.name, n.pool) for n in routes.names()] == [
            ("gemma-3", "gemma"),
            ("smol", "gemma"),
            ("gpt-4o", "default"),
            ("gemma", "gemma"),
            ("chat", "gemma"),
        ]
        with pytest.raises(ModelNotFoundError):
            routes.named("llama")
        assert routes.named("default").pool == "default"

    asyncio.run(scenario())


def test_a_pool_that_serves_nothing_keeps_its_models_requests_waiting() -> None:
    async def scenario() -> None:
        registry, states = AgentRegistry(), StateStore(None)
        routes = ModelRoutes(registry, states, [])
        smollm = await _agent(registry, "smollm", "default")
        gemma = await _agent(registry, "gemma-3", "gemma")
        assert routes.resolve("gemma-3") == Route("gemma", "gemma-3")
        gemma.status.ready = False  # its agents restart: requests for it wait in its pool
        assert routes.resolve("gemma-3") == Route("gemma", "gemma-3")
        with pytest.raises(ModelNotFoundError):
            routes.resolve("never-served")  # the default pool serves: a name it never saw
        smollm.status.ready = False
        assert routes.resolve("never-served") == Route("default", "never-served")
        assert routes.resolve("", required=True) == Route("default", "")
        smollm.status.ready = gemma.status.ready = True
        gemma.status.model = "gemma-4"  # the pool serves another model now: the old one is gone
        with pytest.raises(ModelNotFoundError):
            routes.resolve("gemma-3")

    asyncio.run(scenario())


def test_the_names_a_refusal_lists_are_capped() -> None:
    error = ModelNotFoundError("m" * 1000, [f"name-{n}" for n in range(500)])
    assert "name-19" in error.message and "name-20," not in error.message
    assert "and 480 more" in error.message
    assert len(error.message) < 1000
