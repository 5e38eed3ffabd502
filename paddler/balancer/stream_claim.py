"""A request's claim on one agent slot, and what the balancer knows of the request's size."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from grpc import aio

from paddler.common.image_input import image_count
from paddler.common.prefix_chain import EMPTY_CHAIN, PrefixChain, prefix_chain, reported_links
from paddler.v1 import generation_pb2

if TYPE_CHECKING:
    from paddler.balancer.agent_registry import RegisteredAgent

# Bytes of text per token, roughly, for guessing a prompt's size without its tokenizer.
BYTES_PER_TOKEN = 4
# Template tokens around each message of a conversation.
TOKENS_PER_MESSAGE = 4
# What an image weighs in a prompt before it runs (many projectors make 256 tokens of one).
IMAGE_TOKENS = 256


@dataclass(frozen=True)
class Demand:
    """How big a request looks before it runs: its prompt (guessed from its bytes), the cap on
    what it generates (None: until the slot's context is full), and its prompt's prefix chain
    with the links an agent that runs it will report (see ``paddler.common.prefix_chain``)."""

    prompt_tokens: int = 0
    max_tokens: int | None = None
    chain: PrefixChain = EMPTY_CHAIN
    links: tuple[int, ...] = ()
    # Images in the input: only an agent with a projector can take it.
    images: int = 0

    @classmethod
    def of(cls, generation: generation_pb2.GenerationInput) -> Demand:
        """The demand of an input that passed ``check_generation_input``."""
        images = 0
        if generation.HasField("conversation"):
            messages = generation.conversation.messages
            images = image_count(messages)
            size = sum(len(m.content.encode()) for m in messages) // BYTES_PER_TOKEN
            prompt = size + TOKENS_PER_MESSAGE * len(messages) + IMAGE_TOKENS * images
        else:
            prompt = len(generation.prompt.encode()) // BYTES_PER_TOKEN
        cap = generation.max_tokens if generation.HasField("max_tokens") else None
        chain = prefix_chain(generation)
        return cls(max(prompt, 1), cap, chain, reported_links(chain), images)

    def held_tokens(self, links: int) -> int:
        """Prompt tokens an agent holding the chain's first ``links`` links need not prefill,
        estimated from the characters they span."""
        return int(self.prompt_tokens * self.chain.share(links))


@dataclass(eq=False)
class StreamClaim:
    """One request running on ``agent``: counted in its busy slots until released."""

    agent: RegisteredAgent
    demand: Demand
    granted_at: float = field(default_factory=time.monotonic)
    # Messages relayed so far: about one per generated token.
    relayed: int = 0
    # Set when the agent's summary went out: the request ran to its end.
    completed: bool = False
    # The request's id (for log lines), the call to the agent, and when its last message came
    # (a silent call is cut).
    request_id: str = ""
    call: aio.Call | None = None
    last_message_at: float = field(default_factory=time.monotonic)
    # Since when a message waits for the client to take it (None: none waits); a client that
    # takes none for too long is cut: its call ends and the claim is released (``cut``).
    sending_since: float | None = None
    cut: bool = False
