"""Model-free checks of a GenerationInput, shared by the balancer and the agent."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from paddler.common.errors import InvalidArgumentError
from paddler.common.grammar import compile_grammar
from paddler.common.image_input import check_parts
from paddler.common.tool_calls import check_tools, reply_schema
from paddler.v1 import generation_pb2

CHAT_ROLES = frozenset({"system", "user", "assistant", "tool"})
_FIELD = "input.sampling"

# What one request may carry. Rendering and tokenizing run off the agent's event loop, but
# they still take CPU from decoding: these bound that work (1 MiB of text is ~250k tokens,
# more than any slot's context).
MAX_INPUT_BYTES = 1 << 20  # the prompt, or a conversation's contents together
MAX_MESSAGES = 1024
MAX_STOP_STRINGS = 16
MAX_STOP_BYTES = 256


@dataclass(frozen=True)
class SamplingSettings:
    """Resolved sampling parameters (defaults filled in, all validated)."""

    temperature: float = 0.8
    top_k: int = 80
    top_p: float = 0.8
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None

    def overridden_by(
        self, message: generation_pb2.SamplingParameters, field_path: str = _FIELD
    ) -> SamplingSettings:
        """These settings with every field ``message`` sets replaced; validates the result."""
        changes = {field.name: value for field, value in message.ListFields()}
        resolved = replace(self, **changes)
        resolved.validate(field_path)
        return resolved

    def validate(self, field_path: str = _FIELD) -> None:
        """Raise InvalidArgumentError naming the first out-of-range field."""
        checks = (
            ("temperature", math.isfinite(self.temperature) and self.temperature >= 0, ">= 0"),
            ("top_k", self.top_k >= 0, ">= 0 (0 disables it)"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("min_p", 0 <= self.min_p <= 1, "in [0, 1]"),
            ("repeat_penalty", self.repeat_penalty > 0, "> 0 (1 disables it)"),
            ("presence_penalty", math.isfinite(self.presence_penalty), "a finite number"),
            ("frequency_penalty", math.isfinite(self.frequency_penalty), "a finite number"),
        )
        for name, valid, expected in checks:
            if not valid:
                raise InvalidArgumentError(
                    f"{field_path}.{name}", f"must be {expected}, got {getattr(self, name)}"
                )


# What templates read as `reasoning_effort` (OpenAI's values).
REASONING_EFFORTS = ("minimal", "low", "medium", "high")


def check_generation_input(generation: generation_pb2.GenerationInput) -> str | None:
    """Raise InvalidArgumentError for anything wrong that needs no model to see; return the
    compiled grammar (None without one)."""
    source = generation.WhichOneof("source")
    if source is None:
        raise InvalidArgumentError("input", "set either input.prompt or input.conversation")
    if source == "prompt":
        if not generation.prompt:
            raise InvalidArgumentError("input.prompt", "the prompt is empty")
        _check_size("input.prompt", len(generation.prompt.encode()))
    if source == "conversation":
        _check_conversation(generation.conversation.messages)
        check_tools(generation.conversation)
    _check_stop(generation.stop)
    _check_reasoning(generation)
    if generation.HasField("max_tokens") and generation.max_tokens < 1:
        raise InvalidArgumentError(
            "input.max_tokens",
            f"must be at least 1, got {generation.max_tokens}; "
            "leave it unset to generate until the context is full",
        )
    SamplingSettings().overridden_by(generation.sampling)
    if source == "conversation" and (schema := reply_schema(generation.conversation)):
        if generation.grammar.WhichOneof("kind"):
            raise InvalidArgumentError(
                "input.grammar", "the tools constrain the reply already; send one or the other"
            )
        tools = generation_pb2.Grammar(json_schema=json.dumps(schema))
        return compile_grammar(tools, "input.conversation.tools")
    return compile_grammar(generation.grammar)


def _check_size(field: str, size: int, subject: str = "is") -> None:
    if size > MAX_INPUT_BYTES:
        raise InvalidArgumentError(
            field, f"{subject} {size} bytes; the limit is {MAX_INPUT_BYTES} bytes (1 MiB)"
        )


def _check_conversation(messages: Sequence[generation_pb2.ChatMessage]) -> None:
    field = "input.conversation.messages"
    if not messages:
        raise InvalidArgumentError(field, "the conversation has no messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidArgumentError(
            field, f"has {len(messages)} messages; the limit is {MAX_MESSAGES}"
        )
    for index, message in enumerate(messages):
        if message.role not in CHAT_ROLES:
            raise InvalidArgumentError(
                f"{field}[{index}].role",
                f"unknown role {message.role!r}; use one of {', '.join(sorted(CHAT_ROLES))}",
            )
    size = sum(len(message.content.encode()) for message in messages)
    size += check_parts(messages, field)
    _check_size(field, size, "the message contents together are")


def _check_reasoning(generation: generation_pb2.GenerationInput) -> None:
    if generation.reasoning_format not in generation_pb2.ReasoningFormat.values():
        raise InvalidArgumentError(
            "input.reasoning_format",
            f"unknown value {generation.reasoning_format}; use UNSPECIFIED (auto), NONE or "
            "THINK_TAGS",
        )
    effort = generation.reasoning_effort
    if effort and effort not in REASONING_EFFORTS:
        raise InvalidArgumentError(
            "input.reasoning_effort",
            f"unknown effort {effort[:40]!r}; use one of {', '.join(REASONING_EFFORTS)}",
        )
    if generation.WhichOneof("source") == "prompt":
        for name, given in (
            ("enable_thinking", generation.HasField("enable_thinking")),
            ("reasoning_effort", bool(effort)),
        ):
            if given:
                raise InvalidArgumentError(
                    f"input.{name}",
                    "only a conversation's chat template reads it; a raw prompt is generated "
                    "from as it is (write the template's thinking switch into the prompt)",
                )


def _check_stop(stop: Sequence[str]) -> None:
    if len(stop) > MAX_STOP_STRINGS:
        raise InvalidArgumentError(
            "input.stop", f"has {len(stop)} strings; the limit is {MAX_STOP_STRINGS}"
        )
    for index, text in enumerate(stop):
        if (size := len(text.encode())) > MAX_STOP_BYTES:
            raise InvalidArgumentError(
                f"input.stop[{index}]", f"is {size} bytes; the limit is {MAX_STOP_BYTES} bytes"
            )
