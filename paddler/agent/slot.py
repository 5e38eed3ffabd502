"""One parallel sequence of the llama context: its cached tokens and the job it runs."""

from __future__ import annotations

from paddler.agent.generation_job import GenerationJob
from paddler.agent.sampling import SamplerChain
from paddler.agent.text_stream import TextStream


def common_prefix_length(left: list[int], right: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    length = 0
    for a, b in zip(left, right, strict=False):
        if a != b:
            break
        length += 1
    return length


def choose_slot(free: list[Slot], prompt: list[int]) -> Slot:
    """The free slot for ``prompt``.

    The slot sharing the longest prefix with it, if that keeps at least half of the slot's
    cache (a conversation's next turn keeps all of it); else the least recently used slot, so
    that another conversation's cache is not cut down to a shared system prompt.
    """
    shared = [(common_prefix_length(s.cached, prompt), s) for s in free]
    hits = [(length, s) for length, s in shared if length and 2 * length >= len(s.cached)]
    if hits:
        return max(hits, key=lambda hit: hit[0])[1]
    return min(free, key=lambda s: s.last_used)


class Slot:
    """A sequence id in the KV cache; ``cached`` mirrors the tokens whose KV it holds."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.cached: list[int] = []
        self.job: GenerationJob | None = None
        self.sampler: SamplerChain | None = None
        self.text: TextStream | None = None
        self.pending: list[int] = []
        self.cached_prompt_tokens = 0
        self.completion_tokens = 0
        self.first_token_at: float | None = None
        self.batch_index = -1
        self.last_used = 0

    def start(self, job: GenerationJob, reused: int, sampler: SamplerChain, use: int) -> None:
        """Take ``job`` (the engine's ``use``-th); the first ``reused`` prompt tokens are cached."""
        self.last_used = use
        self.job = job
        self.sampler = sampler
        self.text = TextStream(job.stop)
        self.cached = self.cached[:reused]
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
