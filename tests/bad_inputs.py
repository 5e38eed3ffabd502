"""Requests that must be refused with INVALID_ARGUMENT, and the field each must name.

The limits assume agents started with ``--context-size 512``.
"""

from __future__ import annotations

from paddler.v1 import agent_pb2
from tests.client import conversation_request, prompt_request

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
]
