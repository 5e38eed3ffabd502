"""Generation on a real agent process with the real model, over real gRPC."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from paddler.v1 import agent_pb2, agent_pb2_grpc, generation_pb2
from tests.client import (
    COUNTING_PROMPT,
    conversation_request,
    generate,
    generate_retrying,
    prompt_request,
)
from tests.processes import AgentProcess, agent_stub

FinishReason = generation_pb2.FinishReason
PROMPTS = [
    "The quick brown fox",
    "Once upon a time, in a small village by the sea,",
    "List three prime numbers:",
    "In 1492, Columbus",
    "def fibonacci(n):",
    "The capital of Japan is",
    "Water boils at",
    "My favourite colour is",
]


def _processing(stub: agent_pb2_grpc.AgentServiceStub) -> int:
    return stub.GetStatus(agent_pb2.GetStatusRequest()).status.slots_processing


def _wait_idle(stub: agent_pb2_grpc.AgentServiceStub, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while (busy := _processing(stub)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return busy


def test_batched_greedy_output_equals_the_output_served_alone() -> None:
    request = prompt_request(PROMPTS[1], max_tokens=32)
    with agent_stub("--slots", "8", "--context-size", "256") as (_, stub):
        alone = generate(stub, request)
        # Seven neighbours that go on until their context is full, each already decoding
        # (its first piece arrived) when ours joins the batch.
        neighbours = [
            stub.Generate(prompt_request(COUNTING_PROMPT, None), timeout=300) for _ in range(7)
        ]
        for call in neighbours:
            assert next(call).HasField("text")
        batched = generate(stub, request)
        assert _processing(stub) >= 7, "the neighbours were still decoding when ours ended"
        for call in neighbours:
            call.cancel()
        assert _wait_idle(stub) == 0
    assert alone.summary.usage.completion_tokens == 32
    assert batched.text == alone.text


def test_more_streams_than_slots_are_refused_then_all_complete(
    agent4: AgentProcess, stub4: agent_pb2_grpc.AgentServiceStub
) -> None:
    holders = [stub4.Generate(prompt_request(COUNTING_PROMPT, None), timeout=300) for _ in range(4)]
    for call in holders:
        assert next(call).HasField("text")  # all four slots are busy now
    with pytest.raises(grpc.RpcError) as caught:
        generate(stub4, prompt_request(PROMPTS[0], max_tokens=4))
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for call in holders:
        call.cancel()
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda p: generate_retrying(stub4, prompt_request(p, max_tokens=32)), PROMPTS)
        )
    replies = [reply for reply, _ in results]
    assert all(r.summary.usage.completion_tokens > 0 and r.text for r in replies)
    assert _wait_idle(stub4) == 0


def test_status_snapshot(stub4: agent_pb2_grpc.AgentServiceStub) -> None:
    status = stub4.GetStatus(agent_pb2.GetStatusRequest()).status
    assert (status.name, status.slots_total, status.ready) == ("test-agent", 4, True)
    assert status.model == "SmolLM2-135M-Instruct.Q4_1"


def test_the_status_reports_step_timings_per_stream_count(
    stub4: agent_pb2_grpc.AgentServiceStub,
) -> None:
    generate(stub4, prompt_request(PROMPTS[2], max_tokens=8))
    holders = [stub4.Generate(prompt_request(COUNTING_PROMPT, None), timeout=300) for _ in range(4)]
    for call in holders:
        assert next(call).HasField("text")
    for call in holders:
        assert next(call).HasField("text")  # a step with all four decoding has run
    status = stub4.GetStatus(agent_pb2.GetStatusRequest()).status
    for call in holders:
        call.cancel()
    timings = {t.streams: t.step_seconds for t in status.step_timings}
    assert 1 in timings and 4 in timings and set(timings) <= {1, 2, 3, 4}
    assert all(seconds > 0 for seconds in timings.values())
    assert status.prefill_seconds_per_token > 0
    assert _wait_idle(stub4) == 0
    assert stub4.GetStatus(agent_pb2.GetStatusRequest()).status.prefill_backlog_tokens == 0


def test_cancelling_mid_stream_frees_the_slot() -> None:
    with agent_stub("--slots", "1", "--context-size", "512") as (agent, stub):
        call = stub.Generate(prompt_request(COUNTING_PROMPT, max_tokens=None), timeout=300)
        for _ in range(3):
            assert next(call).HasField("text")
        assert _processing(stub) == 1
        call.cancel()
        assert _wait_idle(stub) == 0
        reply = generate(stub, prompt_request(PROMPTS[0], max_tokens=8))
        assert reply.summary.usage.completion_tokens == 8
        assert [r["outcome"] for r in agent.wait_logs("request ended")] == ["cancelled"]


def test_conversation_is_rendered_with_the_models_chat_template(
    stub4: agent_pb2_grpc.AgentServiceStub,
) -> None:
    question = "What is the capital of France?"
    chat = generate(stub4, conversation_request([("user", question)], max_tokens=16))
    chatml = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        f"Face<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    raw = generate(stub4, prompt_request(chatml, max_tokens=16))
    assert chat.summary.usage.prompt_tokens == raw.summary.usage.prompt_tokens
    assert chat.text == raw.text
    assert "Paris" in chat.text


def test_multibyte_characters_stay_whole(stub4: agent_pb2_grpc.AgentServiceStub) -> None:
    reply = generate(stub4, prompt_request("Repeat after me: 日本語のテキスト. Again: ", 30))
    assert any(ord(c) > 0x3000 for c in reply.text)
    assert "\ufffd" not in reply.text
    assert all(piece for piece in reply.pieces)


def test_max_tokens_ends_the_sequence(stub4: agent_pb2_grpc.AgentServiceStub) -> None:
    reply = generate(stub4, prompt_request(PROMPTS[1], max_tokens=5))
    assert reply.summary.finish_reason == FinishReason.FINISH_REASON_MAX_TOKENS
    assert reply.summary.usage.completion_tokens == 5


def test_stop_string_ends_the_sequence_before_it(stub4: agent_pb2_grpc.AgentServiceStub) -> None:
    free = generate(stub4, prompt_request(PROMPTS[1], max_tokens=40)).text
    stop = free[20:26]
    reply = generate(stub4, prompt_request(PROMPTS[1], max_tokens=40, stop=(stop,)))
    assert reply.summary.finish_reason == FinishReason.FINISH_REASON_STOP_STRING
    assert reply.text == free[: free.find(stop)]


def test_a_full_context_ends_the_sequence() -> None:
    with agent_stub("--slots", "1", "--context-size", "40") as (_, stub):
        reply = generate(stub, prompt_request("Count: 1, 2, 3, 4, 5, 6,", max_tokens=None))
    usage = reply.summary.usage
    assert reply.summary.finish_reason == FinishReason.FINISH_REASON_CONTEXT_FULL
    assert usage.prompt_tokens + usage.completion_tokens == 40 + 1  # the last is sent, not fed


def test_sampled_generation_is_reproducible_with_a_seed(
    stub4: agent_pb2_grpc.AgentServiceStub,
) -> None:
    request = prompt_request(PROMPTS[2], max_tokens=20, temperature=1.0, seed=7)
    assert generate(stub4, request).text == generate(stub4, request).text


def test_the_prompt_prefix_is_reused_from_the_slot_cache(
    stub4: agent_pb2_grpc.AgentServiceStub,
) -> None:
    prompt = "Tell me everything about the history of the Roman Empire in detail. " * 3
    generate(stub4, prompt_request(prompt, max_tokens=4))
    again = generate(stub4, prompt_request(prompt + "Start with", max_tokens=4))
    assert again.summary.usage.cached_tokens >= again.summary.usage.prompt_tokens - 4


def test_without_the_prompt_cache_nothing_is_reused() -> None:
    prompt = "Tell me everything about the history of the Roman Empire in detail. " * 3
    with agent_stub("--slots", "1", "--no-prompt-cache") as (_, stub):
        generate(stub, prompt_request(prompt, max_tokens=4))
        again = generate(stub, prompt_request(prompt + "Start with", max_tokens=4))
    assert again.summary.usage.cached_tokens == 0


def test_alternating_conversations_keep_their_caches(
    stub4: agent_pb2_grpc.AgentServiceStub,
) -> None:
    system = "You are a careful assistant who answers briefly. "
    first = system + "We talked about cats: their history, breeds, habits and care. " * 4
    other = system + "We talked about trains: steam, diesel, electric and maglev. " * 4
    start = generate(stub4, prompt_request(first, max_tokens=4))
    generate(stub4, prompt_request(other, max_tokens=4))
    again = generate(stub4, prompt_request(first + "Now, lions?", max_tokens=4))
    assert again.summary.usage.cached_tokens >= start.summary.usage.prompt_tokens - 2


def test_every_request_logs_one_summary_line(agent4: AgentProcess) -> None:
    served = agent4.logs("request served")
    assert served, "the shared agent served requests before this test"
    keys = {"request_id", "prompt_tokens", "completion_tokens", "time_to_first_token_ms"}
    assert keys | {"tokens_per_s"} <= set(served[-1])


def test_the_repeat_penalty_changes_greedy_output(stub4: agent_pb2_grpc.AgentServiceStub) -> None:
    prompt = "Say it again and again: yes yes yes yes yes yes"
    plain = generate(stub4, prompt_request(prompt, 20, temperature=0.0, repeat_penalty=1.0))
    penalised = generate(stub4, prompt_request(prompt, 20, temperature=0.0, repeat_penalty=3.0))
    assert plain.text != penalised.text
    assert plain.text.count("yes") > penalised.text.count("yes")
