"""Model changes with real agents: what changes without a reload, the drain's timeout, and
requests that name a model (during a rollout two are served, each only by its own agents)."""

from __future__ import annotations

import grpc
import openai
import pytest

from paddler.agent.model_source import resolve_model
from paddler.agent.state_report import StateReport
from paddler.v1 import desired_state_pb2, generation_pb2, status_pb2
from tests.client import COUNTING_PROMPT, invalid_field, prompt_request
from tests.cluster import cluster, to_inference
from tests.openai_clients import client_of
from tests.processes import run_paddler

SMOLLM = "SmolLM2-135M-Instruct.Q4_1"
GEMMA = "gemma-3-270m-q4_k_m"
USER_ONLY = "{% for m in messages if m['role'] == 'user' %}{{ m['content'] }}{% endfor %}"


def _smollm(**fields: object) -> desired_state_pb2.DesiredState:
    model = desired_state_pb2.ModelSource(packaged="smollm2-135m")
    return desired_state_pb2.DesiredState(model=model, **fields)  # type: ignore[arg-type]


def test_sampling_defaults_and_the_template_change_without_a_reload() -> None:
    with cluster(("solo", 1)) as c:
        first = c.set_state(_smollm())
        c.wait_applied(first)
        agent = c.agents["solo"]
        unloads = len(agent.logs("agent not ready"))
        greedy = generation_pb2.SamplingParameters(temperature=0.0)
        defaults = desired_state_pb2.InferenceDefaults(sampling=greedy)
        second = c.set_state(_smollm(defaults=defaults, chat_template_override=USER_ONLY))
        c.wait_applied(second)
        agent.wait_logs("desired state applied without a reload")
        assert len(agent.logs("agent not ready")) == unloads  # never out of service
        # The new template is the one that renders: a system turn alone renders to nothing.
        only_system = to_inference(prompt_request("unused"))
        only_system.input.conversation.messages.add(role="system", content="Be brief.")
        assert invalid_field(c.inference, only_system) == "input"
        # A change of the context size does reload; --wait follows it to its end.
        result = run_paddler(
            "state", "set", "--model", "smollm2-135m", "--context-size", "256", "--wait",
            "--address", c.balancer.management,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "applied on all 1 agents" in result.stderr
        assert c.list_agents()[0].phase == status_pb2.STATE_PHASE_APPLIED
        assert len(agent.logs("agent not ready")) == unloads + 1


def test_a_swap_cuts_what_outlives_its_drain_timeout() -> None:
    with cluster() as c:
        agent = c.start_agent(
            "solo", "--slots", "1", "--context-size", "2048", "--drain-timeout", "0"
        )
        # A long generation (greedy counting to the token cap): in flight when the swap comes.
        request = to_inference(prompt_request(COUNTING_PROMPT, max_tokens=1500))
        stream = c.inference.Generate(request)
        first = next(stream)
        assert first.WhichOneof("event") == "text"
        version = c.set_state(_smollm(defaults={"context_size": 512}))
        with pytest.raises(grpc.RpcError) as cut:
            for _ in stream:
                pass
        assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
        assert agent.wait_logs("drain timed out: cutting the requests in flight")
        c.wait_applied(version)


def test_a_request_names_its_model_and_is_served_by_no_other() -> None:
    gemma = resolve_model(desired_state_pb2.ModelSource(packaged="gemma3-270m"), StateReport())
    with cluster(("smollm", 1)) as c:
        c.start_agent("gemma", "--slots", "1", "--context-size", "512", "--model", str(gemma))
        with client_of(c) as client:
            assert sorted(model.id for model in client.models.list()) == sorted([SMOLLM, GEMMA])
            # The reply names the model that served it (the serving agent's).
            for name in (GEMMA, SMOLLM, GEMMA, SMOLLM, GEMMA, SMOLLM):
                reply = client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
                )
                assert reply.model == name
                assert client.embeddings.create(model=name, input=["a"] * 40).model == name
            with pytest.raises(openai.NotFoundError) as raised:
                client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
                )
            assert raised.value.code == "model_not_found"
            assert SMOLLM in raised.value.message and GEMMA in raised.value.message
