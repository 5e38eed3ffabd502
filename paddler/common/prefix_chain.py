"""A request's prompt prefixes as chained hashes: how the balancer learns which agents hold a
prompt's start in their KV cache without ever tokenizing.

A conversation's chain has one link per message (hash of the previous link and the message),
seeded by its tools and tool choice, which the chat template renders before the messages. A raw
prompt's chain has one link per ``BLOCK_CHARS`` characters. The balancer hashes each request
once; an agent hashes the requests it runs with the same function and reports the links its
slots and prompt cache hold (``reported_links``). A link both sides have is the same text, so a
match is exact; how many tokens it covers the balancer estimates from the characters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from paddler.v1 import generation_pb2

BLOCK_CHARS = 256
"""Characters of a raw prompt per link."""

MAX_LINKS = 512
"""Links hashed per request: a prompt's first 128k characters, or first 512 messages."""

IMAGE_CHARS = 1024
"""What an image weighs in a prompt, in characters (about the 256 tokens many projectors make)."""

LINKS_PER_PROMPT = 16
"""Links an agent reports of each prompt it holds (see ``reported_links``)."""

MAX_PREFIX_HASHES = 256
"""The most links one status snapshot carries (2 KB): an agent reports its slots' prompts and
its most recently used stored prompts until this many."""

_CHAT_SEED = b"paddler.v1.Conversation"
_PROMPT_SEED = b"paddler.v1.prompt"


@dataclass(frozen=True)
class PrefixChain:
    """``hashes[i]`` names the prompt's first ``i + 1`` links; ``ends[i]`` is how many of the
    prompt's ``chars`` characters they span."""

    hashes: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()
    chars: int = 0

    def share(self, links: int) -> float:
        """The part of the prompt its first ``links`` links span (0..1)."""
        if links <= 0 or not self.chars:
            return 0.0
        return min(self.ends[links - 1] / self.chars, 1.0)


EMPTY_CHAIN = PrefixChain()


def _link(previous: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(previous + data, digest_size=8).digest()


def _size(message: generation_pb2.ChatMessage) -> int:
    """A message's size in characters of prompt, an image counted as ``IMAGE_CHARS``."""
    parts = sum(len(part.text) or IMAGE_CHARS for part in message.parts)
    return len(message.content) + len(message.role) + parts


def prefix_chain(generation: generation_pb2.GenerationInput) -> PrefixChain:
    """The chain of a generation's input (empty when it has no text)."""
    if generation.HasField("conversation"):
        conversation = generation.conversation
        seed = generation_pb2.Conversation(
            tools=conversation.tools, tool_choice=conversation.tool_choice
        )
        pieces = [m.SerializeToString(deterministic=True) for m in conversation.messages]
        sizes = [_size(m) for m in conversation.messages]
        head = _link(_CHAT_SEED, seed.SerializeToString(deterministic=True))
    else:
        text = generation.prompt
        blocks = range(0, len(text), BLOCK_CHARS)
        pieces = [text[start : start + BLOCK_CHARS].encode() for start in blocks]
        sizes = [min(BLOCK_CHARS, len(text) - start) for start in blocks]
        head = _PROMPT_SEED
    hashes: list[int] = []
    ends: list[int] = []
    spanned = 0
    for piece, size in zip(pieces[:MAX_LINKS], sizes, strict=False):
        head = _link(head, piece)
        spanned += size
        hashes.append(int.from_bytes(head, "little"))
        ends.append(spanned)
    return PrefixChain(tuple(hashes), tuple(ends), sum(sizes))


def reported_links(chain: PrefixChain) -> tuple[int, ...]:
    """The links an agent reports of a prompt it holds: the whole prompt, then prefixes
    1, 2, 4, 8, ... links shorter, and the first link (a shared system prompt or document), at
    most ``LINKS_PER_PROMPT``."""
    hashes = chain.hashes
    if not hashes:
        return ()
    last = len(hashes) - 1
    picked = [last]
    step = 1
    while len(picked) < LINKS_PER_PROMPT - 1 and last - step > 0:
        picked.append(last - step)
        step *= 2
    if last:
        picked.append(0)
    return tuple(hashes[index] for index in picked)
