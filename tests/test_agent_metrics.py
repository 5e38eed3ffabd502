"""The agent's own Prometheus metrics: every decode step counted, prefill and decoded tokens
exactly as the requests used them, slots and KV cache against their capacity."""

from __future__ import annotations

import httpx

from paddler.v1 import agent_pb2_grpc
from tests.client import generate, prompt_request
from tests.metric_samples import Samples, parse_samples, value
from tests.processes import AgentProcess


def scrape(agent: AgentProcess) -> Samples:
    reply = httpx.get(agent.metrics, timeout=10)
    assert reply.status_code == 200
    return parse_samples(reply.text)


def test_steps_and_tokens_are_counted_exactly(
    agent4: AgentProcess, stub4: agent_pb2_grpc.AgentServiceStub
) -> None:
    before = scrape(agent4)
    completions = prefills = 0
    for index, length in enumerate((3, 6, 9)):
        request = prompt_request(f"Request {index}: tell me about {length} cats", length)
        reply = generate(stub4, request)
        usage = reply.summary.usage
        completions += usage.completion_tokens
        prefills += usage.prompt_tokens - usage.cached_tokens  # what no slot's cache held
    after = scrape(agent4)

    def moved(name: str) -> float:
        return value(after, name) - value(before, name)

    # One at a time, each request is one prefill step, then a step per token after the first.
    assert moved("paddler_engine_step_duration_seconds_count") == completions
    assert moved("paddler_engine_step_streams_count") == completions - 3
    assert moved("paddler_engine_decoded_tokens_total") == completions - 3
    assert moved("paddler_engine_prefilled_tokens_total") == prefills
    assert value(after, "paddler_engine_slots", state="total") == 4
    assert value(after, "paddler_engine_slots", state="busy") == 0
    capacity = value(after, "paddler_engine_kv_cache_tokens", state="capacity")
    assert capacity == 4 * 512
    assert 0 < value(after, "paddler_engine_kv_cache_tokens", state="used") <= capacity
