"""Reads a reply in the generic tool format as it streams: the text of ``{"response": ...}`` is
passed on as it comes, a ``{"tool_call": ...}`` becomes one ToolCall once it is whole, with its
arguments checked against the tool's parameters."""

from __future__ import annotations

import json
import uuid
from typing import Any

import jsonschema

from paddler.common.errors import InternalError
from paddler.common.tool_calls import compact
from paddler.v1 import generation_pb2

_TEXT = '{"response":"'
_CALL = '{"tool_call":'
_HIGH_SURROGATES = ("\ud800", "\udbff")


class ToolReply:
    """One reply under tools; ``parameters`` are the offered tools' argument schemas."""

    def __init__(self, parameters: dict[str, dict[str, Any]]) -> None:
        self._parameters = parameters
        self._raw = ""
        self._sent = ""

    def feed(self, piece: str) -> str:
        """Take the next generated piece; return the text to send on (for a text reply)."""
        self._raw += piece
        if not self._raw.startswith(_TEXT):
            return ""
        body = self._raw[len(_TEXT) :]
        decoded = json.loads(f'"{body[: _decodable(body)]}"')
        if decoded and _HIGH_SURROGATES[0] <= decoded[-1] <= _HIGH_SURROGATES[1]:
            decoded = decoded[:-1]  # half of a pair: wait for the other half
        fresh = decoded[len(self._sent) :]
        self._sent = decoded
        return str(fresh)

    def call(self) -> generation_pb2.ToolCall | None:
        """The whole call once generation ended; None for a text reply or a cut-off call."""
        if not self._raw.startswith(_CALL):
            return None
        try:
            call = json.loads(self._raw)["tool_call"]
        except json.JSONDecodeError:
            return None  # cut off by max_tokens or a full context
        name, arguments = call["name"], call["arguments"]
        try:
            jsonschema.validate(arguments, self._parameters[name])
        except jsonschema.ValidationError as error:
            raise InternalError(
                f"the call of {name} does not match its parameters: {error.message}"
            ) from None
        return generation_pb2.ToolCall(
            id=f"call_{uuid.uuid4().hex[:24]}", name=name, arguments=compact(arguments)
        )


def _decodable(body: str) -> int:
    """How much of a JSON string's inside can be decoded now: up to its closing quote, short of
    an escape still incomplete."""
    index = 0
    while index < len(body):
        char = body[index]
        if char == '"':
            return index
        if char != "\\":
            index += 1
            continue
        if index + 1 >= len(body):
            return index
        if body[index + 1] != "u":
            index += 2
            continue
        if index + 6 > len(body):
            return index
        index += 6
    return index
