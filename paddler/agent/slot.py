"""One parallel sequence of the llama context (its cached tokens and the job it runs), the
choice of slot for a prompt, and how the slots fill a step's batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from paddler.agent.generation_job import GenerationJob
from paddler.agent.sampling import SamplerChain
from paddler.agent.text_stream import TextStream


def common_prefix_length(left: Sequence[int], right: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    length = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        length += 1
    return length


# What one more KV stream inside the busy sequences' id range costs, in prompt tokens to
# prefill: llama.cpp decodes a batch over the contiguous range of KV streams from its lowest
# to its highest sequence id, idle ones included (bench_agent, SmolLM2, 2 threads, 4 of 8
# slots busy: a spread-out range made every step about 15 % slower).
SPREAD_COST_TOKENS = 32


def choose_slot(free: list[Slot], busy: list[int], prompt: list[int]) -> Slot:
    """The free slot where ``prompt`` costs least: the cached tokens it would throw away, the
    prompt tokens it would have to prefill, and how far it spreads the busy sequence ids
    (ties: the lowest id).

    A conversation's next turn extends its own slot's cache and costs only the new tokens; a
    different conversation that shares just a system prompt goes to an empty or older slot
    instead of cutting down a cache its owner will want again; between caches of little
    worth, the slot next to the busy ones wins.
    """

    ends = (min(busy), max(busy)) if busy else None

    def cost(slot: Slot) -> tuple[int, int]:
        shared = common_prefix_length(slot.cached, prompt)
        lost = len(slot.cached) - shared
        spread = max(ends[1], slot.seq_id) - min(ends[0], slot.seq_id) if ends else 0
        return lost + len(prompt) - shared + SPREAD_COST_TOKENS * spread, slot.seq_id

    return min(free, key=cost)


class Slot:
    """A sequence id in the KV cache; ``cached`` mirrors the tokens whose KV it holds."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.cached: list[int] = []
        # The prefix-chain links of the prompt ``cached`` starts with, once it is all in (what
        # the agent reports).
        self.prefixes: tuple[int, ...] = ()
        self.job: GenerationJob | None = None
        self.sampler: SamplerChain | None = None
        self.text: TextStream | None = None
        self.pending: list[int] = []
        self.cached_prompt_tokens = 0
        self.completion_tokens = 0
        self.first_token_at: float | None = None
        self.batch_index = -1

    def start(self, job: GenerationJob, reused: int, sampler: SamplerChain) -> None:
        """Take ``job``; the first ``reused`` prompt tokens are already cached."""
        self.job = job
        self.sampler = sampler
        self.text = TextStream(job.stop)
        self.cached = self.cached[:reused]
        self.prefixes = ()  # until the prompt is in (the engine sets them at the first token)
        self.pending = job.prompt_tokens[reused:]
        self.cached_prompt_tokens = reused
        self.completion_tokens = 0
        self.first_token_at = None
        self.batch_index = -1

    def feeding_order(self) -> tuple[bool, float]:
        """Generating slots first, then prompts; each oldest request first."""
        assert self.job is not None
        return len(self.pending) > 1, self.job.created_at

    def release(self) -> None:
        """Free the slot; its cache is kept for a later prompt with the same prefix."""
        if self.sampler is not None:
            self.sampler.free()
        self.job = None
        self.sampler = None
        self.text = None
        self.pending = []
        self.batch_index = -1


def step_shape(fed: list[tuple[Slot, list[int]]], slots: list[Slot]) -> tuple[int, int, int]:
    """What a step decoded, for its timing: streams that got a token, prompt tokens prefilled,
    and prompt tokens still waiting in the slots that have not generated yet."""
    streams = sum(1 for slot, _ in fed if slot.completion_tokens > 0)
    prompt = sum(len(tokens) for slot, tokens in fed if slot.completion_tokens == 0)
    backlog = sum(
        len(slot.pending) for slot in slots if slot.job is not None and slot.completion_tokens == 0
    )
    return streams, prompt, backlog


def fill_batch(batch: Any, slots: list[Slot], budget: int) -> list[tuple[Slot, list[int]]]:
    """Write the next step into ``batch``: one token per generating slot, then prompt chunks
    (oldest request first), up to ``budget`` tokens, in sequence order, which llama.cpp decodes
    about 15 % faster than an interleaved order (measured with bench_agent). Returns what each
    slot was fed."""
    fed: list[tuple[Slot, list[int]]] = []
    active = [slot for slot in slots if slot.job is not None and slot.pending]
    for slot in sorted(active, key=Slot.feeding_order):
        if budget == 0:
            break
        chunk = slot.pending[:budget]
        # An image (placeholders, negative) is decoded in a call of its own: stop before it.
        chunk = chunk[: next((i for i, token in enumerate(chunk) if token < 0), len(chunk))]
        if not chunk:
            continue
        del slot.pending[: len(chunk)]
        budget -= len(chunk)
        fed.append((slot, chunk))
    fed.sort(key=lambda item: item[0].seq_id)
    count = 0
    for slot, chunk in fed:
        position = len(slot.cached)
        for offset, token in enumerate(chunk):
            batch.token[count] = token
            batch.pos[count] = position + offset
            batch.n_seq_id[count] = 1
            batch.seq_id[count][0] = slot.seq_id
            batch.logits[count] = False
            count += 1
        slot.batch_index = -1
        if not slot.pending:
            batch.logits[count - 1] = True
            slot.batch_index = count - 1
    batch.n_tokens = count
    return fed
