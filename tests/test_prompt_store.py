"""The host-memory prompt cache on the real model: a prompt whose slot was reused is restored
from it (counted in ``cached_tokens``), greedy output is the same with and without it, and it
holds no more than its capacity, least recently used out first."""

from __future__ import annotations

import asyncio
import re

import httpx

from paddler.agent.default_model import default_model_path
from paddler.agent.engine import Engine
from paddler.agent.generation_job import Finished, GenerationJob
from paddler.agent.llama_context import EngineConfig
from paddler.agent.llama_model import LlamaModel
from paddler.agent.metrics import AgentMetrics
from paddler.agent.model_shape import read_model_shape
from paddler.common.generation_input import SamplingSettings
from paddler.common.prefix_chain import prefix_chain, reported_links
from paddler.v1 import agent_pb2
from tests.client import generate, prompt_request
from tests.processes import agent_stub

GREEDY = SamplingSettings(temperature=0.0, repeat_penalty=1.0)
# Three prompts with nothing in common, each long enough to be worth storing.
PROMPTS = {
    name: f"{opening} " + " ".join(f"{word} {n}," for n in range(40))
    for name, opening, word in (
        ("a", "Apples, counted one by one:", "apple"),
        ("b", "Boats in the harbour, numbered:", "boat"),
        ("c", "Candles on the shelf, in a row:", "candle"),
    )
}
# Two prompts sharing a long opening, each with a long tail of its own: the second starts on
# the empty slot (taking the first's would throw away more than it reuses).
OPENING = "Rules of the reading room: " + " ".join(f"rule {n} is to be kind," for n in range(20))
PROMPTS["x"] = OPENING + " Then the first story: " + " ".join(f"fox {n}," for n in range(60))
PROMPTS["y"] = OPENING + " Then the second story: " + " ".join(f"owl {n}," for n in range(60))


def _served(order: str, store_bytes: int, slots: int = 1) -> tuple[list[tuple[str, int, int]], int]:
    """Each prompt of ``order`` in turn: its greedy text, cached tokens and prompt tokens; and
    the prompts the store held at the end."""
    model = LlamaModel(default_model_path())
    config = EngineConfig(
        slots=slots, context_size=1024, batch_size=256, threads=2, prompt_store_bytes=store_bytes
    )
    engine = Engine(model, config)
    results: list[tuple[str, int, int]] = []

    async def scenario() -> None:
        engine.start(asyncio.get_running_loop())
        for name in order:
            job = GenerationJob(
                request_id=name,
                prompt_tokens=model.tokenize(PROMPTS[name]),
                max_tokens=12,
                sampling=GREEDY,
                stop=(),
            )
            engine.submit(job)
            pieces = []
            while not isinstance(event := await asyncio.wait_for(job.events.get(), 120), Finished):
                assert isinstance(event, str), event
                pieces.append(event)
            results.append(("".join(pieces), event.cached_tokens, event.prompt_tokens))

    try:
        asyncio.run(scenario())
        held = len(engine.prompt_store) if engine.prompt_store is not None else 0
    finally:
        engine.stop()
    return results, held


def test_a_reused_slots_prompt_is_restored_and_greedy_output_does_not_change() -> None:
    stored, held = _served("abab", 1 << 30)
    plain, _ = _served("abab", 0)
    assert [text for text, _, _ in stored] == [text for text, _, _ in plain]
    assert [cached for _, cached, _ in plain] == [0, 0, 0, 0]  # one slot, the other prompt in it
    # The first two prefill all; the next two come back from the store: all but the last
    # prompt token (the one decoded to draw the first new token).
    assert [cached for _, cached, _ in stored] == [0, 0, stored[2][2] - 1, stored[3][2] - 1]
    assert held == 2


def test_a_prefix_another_slot_holds_is_copied_and_greedy_output_does_not_change() -> None:
    copied, _ = _served("xy", 1 << 30, slots=2)
    plain, _ = _served("xy", 0, slots=2)
    assert [text for text, _, _ in copied] == [text for text, _, _ in plain]
    assert plain[1][1] == 0  # no host memory to copy through: the empty slot prefills it all
    model = LlamaModel(default_model_path())
    opening = len(model.tokenize(OPENING))
    model.close()
    assert copied[1][1] >= opening - 2  # the opening came from the first prompt's slot


def test_a_prefix_a_busy_slot_holds_is_copied_while_that_slot_generates() -> None:
    model = LlamaModel(default_model_path())
    config = EngineConfig(
        slots=2, context_size=1024, batch_size=256, threads=2, prompt_store_bytes=1 << 30
    )
    metrics = AgentMetrics()
    engine = Engine(model, config, metrics)

    def job(name: str, max_tokens: int) -> GenerationJob:
        tokens = model.tokenize(PROMPTS[name])
        return GenerationJob(name, tokens, max_tokens, GREEDY, ())

    async def scenario() -> tuple[int, int]:
        engine.start(asyncio.get_running_loop())
        first, second = job("x", 200), job("y", 4)
        engine.submit(first)
        assert isinstance(await asyncio.wait_for(first.events.get(), 120), str)  # generating
        engine.submit(second)
        while not isinstance(event := await asyncio.wait_for(second.events.get(), 120), Finished):
            assert isinstance(event, str), event
        engine.cancel(first)
        return event.cached_tokens, len(model.tokenize(OPENING))

    try:
        cached, opening = asyncio.run(scenario())
    finally:
        engine.stop()
    assert cached >= opening - 2
    copied = metrics.registry.get_sample_value("paddler_engine_prefix_copied_tokens_total")
    assert copied == cached


def test_the_store_keeps_to_its_capacity_least_recently_used_out_first() -> None:
    model = LlamaModel(default_model_path())
    one_prompt = len(model.tokenize(PROMPTS["a"])) + 16  # tokens a stored prompt holds, about
    model.close()
    kv_bytes_per_token = read_model_shape(default_model_path()).kv_bytes_per_token
    capacity = int(one_prompt * kv_bytes_per_token * 1.5)  # room for one prompt, not two
    results, held = _served("abca", capacity)
    assert held == 1
    assert results[3][1] == 0  # "a" went out when "b" came in, "b" when "c" did
    roomy, _ = _served("abca", 1 << 30)
    assert roomy[3][1] > 0


def _links(name: str) -> set[int]:
    """The prefix-chain links an agent reports while it holds prompt ``name``."""
    chain = prefix_chain(prompt_request(PROMPTS[name]).input)
    return set(reported_links(chain))


def test_the_agent_reports_its_prompt_cache_in_usage_status_and_metrics() -> None:
    with agent_stub("--slots", "1") as (agent, stub):
        replies = [generate(stub, prompt_request(PROMPTS[name], max_tokens=4)) for name in "aba"]
        assert replies[2].summary.usage.cached_tokens == replies[2].summary.usage.prompt_tokens - 1
        status = stub.GetStatus(agent_pb2.GetStatusRequest()).status
        assert status.prompt_cache_prompts == 2 and status.prompt_cache_bytes > 0
        # What prefix-aware routing reads: the slot's prompt and the stored ones.
        assert set(status.prefix_hashes) == _links("a") | _links("b")
        [chosen] = agent.logs("context size chosen")
        assert isinstance(chosen["prompt_cache_mib"], int) and chosen["prompt_cache_mib"] > 0
        restored = re.search(
            r"^paddler_engine_prompt_cache_restored_tokens_total (\S+)$",
            httpx.get(agent.metrics, timeout=30).text,
            re.MULTILINE,
        )
        assert restored is not None
        assert float(restored.group(1)) == replies[2].summary.usage.cached_tokens
    with agent_stub("--slots", "1", "--prompt-cache-mib", "0") as (_, stub):
        replies = [generate(stub, prompt_request(PROMPTS[name], max_tokens=4)) for name in "aba"]
        assert replies[2].summary.usage.cached_tokens == 0
        status = stub.GetStatus(agent_pb2.GetStatusRequest()).status
        assert status.prompt_cache_prompts == 0
        assert set(status.prefix_hashes) == _links("a")  # the slot's prompt alone
