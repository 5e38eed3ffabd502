"""A validated generation on its way through the engine, and the events it produces."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from paddler.agent.grammar_constraint import GrammarConstraint
from paddler.agent.projector import ImageChunk
from paddler.agent.reasoning_split import ReasoningSplit
from paddler.agent.tool_reply import ReplyReader
from paddler.common.errors import PaddlerError
from paddler.common.generation_input import SamplingSettings
from paddler.v1 import generation_pb2


@dataclass(frozen=True)
class Finished:
    """The generation ended normally."""

    finish_reason: generation_pb2.FinishReason.ValueType
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    time_to_first_token_s: float


@dataclass(frozen=True)
class Failed:
    """The engine could not finish the generation."""

    error: PaddlerError


Event = str | Finished | Failed


@dataclass(eq=False)
class GenerationJob:
    """Everything the engine needs for one request; events flow back through ``events``."""

    request_id: str
    prompt_tokens: list[int]
    max_tokens: int
    sampling: SamplingSettings
    stop: tuple[str, ...]
    grammar: GrammarConstraint | None = None
    # Set when tools may be called: reads the reply's generic format.
    tool_reply: ReplyReader | None = None
    # Set when the reply's reasoning is split from its text.
    reasoning: ReasoningSplit | None = None
    # The prompt's images, by the index of their first placeholder in ``prompt_tokens``.
    images: dict[int, ImageChunk] = field(default_factory=dict)
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    created_at: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    # A resumed generation: the tokens another agent generated (the prompt's tail), and the
    # bytes of their text the client has not received yet (sent first).
    resumed_tokens: int = 0
    replay: bytes = b""
    # Every token sampled, in order (appended by the engine thread before the token's text
    # goes out, so a message's text is always covered by the tokens listed so far).
    generated: list[int] = field(default_factory=list)
    # The prefix-chain links of the input a slot holding its prompt reports (see
    # ``paddler.common.prefix_chain``).
    prefixes: tuple[int, ...] = ()


def take_ready(piece: str, events: asyncio.Queue[Event]) -> tuple[str, Event | None]:
    """``piece`` and the text pieces queued behind it, joined: a stream whose messages wait
    (its reader or the event loop is behind) sends what is ready as one message, while at low
    load every piece still goes alone, at once. Returns the text and the event that ended the
    run of pieces, if one was queued."""
    if events.empty():
        return piece, None
    pieces = [piece]
    while not events.empty():
        event = events.get_nowait()
        if not isinstance(event, str):
            return "".join(pieces), event
        pieces.append(event)
    return "".join(pieces), None
