"""How much context each slot holds: by default the model's trained context, cut to the memory
the agent may use; the flag and the desired state win. The agents' status, ``paddler agents``
and ``/v1/models`` report it, and a prompt over it gets a 400 that says what to do."""

from __future__ import annotations

import httpx
import openai
import pytest

from paddler.agent.default_model import default_model_path
from paddler.agent.model_shape import read_model_shape
from paddler.v1 import desired_state_pb2, status_pb2
from tests.cluster import cluster
from tests.processes import run_paddler

MODEL = "SmolLM2-135M-Instruct.Q4_1"
CAPPED_SLOTS = 2
CAPPED_CONTEXT = 1024


def _models(base_url: str) -> tuple[dict[str, object], dict[str, object]]:
    listed = httpx.get(f"{base_url}/models", timeout=30).json()["data"]
    one = httpx.get(f"{base_url}/models/{MODEL}", timeout=30).json()
    return listed[0], one


def test_the_context_defaults_to_the_trained_one_cut_to_the_memory_budget() -> None:
    shape = read_model_shape(default_model_path())
    assert shape.trained_context == 8192  # SmolLM2's metadata
    # Room for the weights and exactly CAPPED_CONTEXT tokens per slot, not one more.
    budget = shape.file_bytes + CAPPED_SLOTS * CAPPED_CONTEXT * shape.kv_bytes_per_token + 1000
    with cluster() as c:
        trained = c.start_agent("trained", "--slots", "1")
        [chosen] = trained.wait_logs("context size chosen")
        assert chosen["context_size"] == 8192
        assert chosen["decided_by"] == "the model's trained context"
        [agent] = c.list_agents()
        assert (agent.context_size, agent.trained_context_size) == (8192, 8192)
        assert agent.context_source == status_pb2.CONTEXT_SOURCE_TRAINED
        assert "8192 (trained)" in run_paddler("agents", "--address", c.balancer.management).stdout
        listed, one = _models(c.balancer.openai)
        for card in (listed, one):
            assert card["id"] == MODEL
            assert card["context_length"] == card["max_model_len"] == 8192
            assert card["meta"] == {"n_ctx": 8192, "n_ctx_train": 8192}

        capped = c.start_agent(
            "capped", "--slots", str(CAPPED_SLOTS), "--memory-budget", str(budget)
        )
        [chosen] = capped.wait_logs("context size chosen")
        assert chosen["context_size"] == CAPPED_CONTEXT
        assert chosen["decided_by"] == "the memory the agent has"
        # A request may go to either agent: it can count on the smaller context.
        assert _models(c.balancer.openai)[0]["context_length"] == CAPPED_CONTEXT
        listing = run_paddler("agents", "--address", c.balancer.management).stdout
        assert f"{CAPPED_CONTEXT} (memory, trained 8192)" in listing

        trained.stop()
        c.wait_for(lambda agents: [a.name for a in agents] == ["capped"])
        client = openai.OpenAI(base_url=c.balancer.openai, api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            client.completions.create(model=MODEL, prompt="word " * 1200, max_tokens=4)
        message = str(refused.value)
        assert f"a slot's context holds {CAPPED_CONTEXT}" in message
        assert "context_length" in message and "paddler state set --context-size" in message

        # The desired state's context wins over the agent's choice.
        version = c.set_state(
            desired_state_pb2.DesiredState(
                model=desired_state_pb2.ModelSource(packaged="smollm2-135m"),
                defaults=desired_state_pb2.InferenceDefaults(context_size=512),
            )
        )
        [agent] = c.wait_applied(version)
        assert agent.context_size == 512
        assert agent.context_source == status_pb2.CONTEXT_SOURCE_DESIRED_STATE
        assert _models(c.balancer.openai)[0]["context_length"] == 512


def test_the_flag_wins_and_a_context_below_the_minimum_is_refused() -> None:
    with cluster(("flagged", 1)) as c:  # the cluster starts agents with --context-size 512
        [agent] = c.list_agents()
        assert agent.context_size == 512
        assert agent.context_source == status_pb2.CONTEXT_SOURCE_FLAG
    refused = run_paddler("agent", "--context-size", "8")
    assert refused.returncode == 2
    assert "0 (the model's trained context) or at least 16" in refused.stderr
