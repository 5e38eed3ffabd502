"""Requests that must be refused with INVALID_ARGUMENT, and the field each must name.

The limits assume agents started with ``--context-size 512``.
"""

from __future__ import annotations

from paddler.common.generation_input import (
    MAX_INPUT_BYTES,
    MAX_MESSAGES,
    MAX_STOP_BYTES,
    MAX_STOP_STRINGS,
)
from paddler.v1 import agent_pb2
from tests.client import conversation_request, prompt_request

_HALF = "x" * (MAX_INPUT_BYTES // 2)


def _with(request: agent_pb2.GenerateRequest, **fields: object) -> agent_pb2.GenerateRequest:
    """``request`` with input fields set."""
    for name, value in fields.items():
        setattr(request.input, name, value)
    return request


BAD_INPUTS: list[tuple[agent_pb2.GenerateRequest, str]] = [
    (prompt_request(""), "input.prompt"),
    (agent_pb2.GenerateRequest(), "input"),
    (conversation_request([]), "input.conversation.messages"),
    (
        conversation_request([("user", "hi"), ("robot", "beep")]),
        "input.conversation.messages[1].role",
    ),
    (prompt_request("Hi", max_tokens=0), "input.max_tokens"),
    (prompt_request("Hi", max_tokens=-3), "input.max_tokens"),
    (prompt_request("Hi", max_tokens=513), "input.max_tokens"),
    (prompt_request("Hi", temperature=-0.5), "input.sampling.temperature"),
    (prompt_request("Hi", top_p=0.0), "input.sampling.top_p"),
    (prompt_request("Hi", top_p=1.5), "input.sampling.top_p"),
    (prompt_request("Hi", min_p=2.0), "input.sampling.min_p"),
    (prompt_request("Hi", repeat_penalty=0.0), "input.sampling.repeat_penalty"),
    (prompt_request("Hi", top_k=-1), "input.sampling.top_k"),
    (prompt_request("word " * 600), "input"),
    (prompt_request("x" * (MAX_INPUT_BYTES + 1)), "input.prompt"),
    (conversation_request([("user", "hi")] * (MAX_MESSAGES + 1)), "input.conversation.messages"),
    (conversation_request([("user", _HALF), ("user", _HALF + "x")]), "input.conversation.messages"),
    (prompt_request("Hi", stop=("a",) * (MAX_STOP_STRINGS + 1)), "input.stop"),
    (prompt_request("Hi", stop=("ok", "x" * (MAX_STOP_BYTES + 1))), "input.stop[1]"),
    (_with(prompt_request("Hi"), enable_thinking=True), "input.enable_thinking"),
    (_with(prompt_request("Hi"), reasoning_effort="low"), "input.reasoning_effort"),
    (
        _with(conversation_request([("user", "hi")]), reasoning_effort="max"),
        "input.reasoning_effort",
    ),
    (_with(prompt_request("Hi"), reasoning_format=7), "input.reasoning_format"),
]
