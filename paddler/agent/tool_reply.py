"""Reads a reply under tools as it streams: its text is passed on as it comes, and a call
becomes one ToolCall once it is whole, its arguments checked against the tool's parameters.
One reader per format (see ``paddler.agent.tool_prompt``)."""

from __future__ import annotations

import json
import uuid
from typing import Any, Protocol

import jsonschema

from paddler.common.errors import InternalError, InvalidArgumentError
from paddler.common.rpc_status import INVALID_TOOL_CALL
from paddler.common.tool_calls import compact, parameters_of
from paddler.v1 import generation_pb2

_TEXT = '{"response":"'
_CALL = '{"tool_call":'
_HIGH_SURROGATES = ("\ud800", "\udbff")
CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"


class ReplyReader(Protocol):
    """What the agent's servicer needs of a reader."""

    def feed(self, piece: str) -> str:
        """Take the next generated piece; return the text to send on."""
        ...

    def flush(self) -> str:
        """At the end of generation: any text still held back."""
        ...

    def call(self) -> generation_pb2.ToolCall | None:
        """The whole call once generation ended; None for a text reply or a cut-off call."""
        ...


class GenericReply:
    """A reply in the generic format: ``{"response": "..."}`` or ``{"tool_call": {...}}``;
    ``parameters`` are the offered tools' argument schemas."""

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

    def flush(self) -> str:
        """Nothing is held back beyond an escape the reply never finished."""
        return ""

    def call(self) -> generation_pb2.ToolCall | None:
        """The whole call once generation ended; None for a text reply or a cut-off call."""
        if not self._raw.startswith(_CALL):
            return None
        try:
            call = json.loads(self._raw)["tool_call"]
        except json.JSONDecodeError:
            return None  # cut off by max_tokens or a full context
        return checked_call(self._parameters, call["name"], call["arguments"])


class HermesReply:
    """A reply in a template's ``<tool_call>`` syntax: text, then maybe one call in tags."""

    def __init__(self, parameters: dict[str, dict[str, Any]]) -> None:
        self._parameters = parameters
        self._raw = ""
        self._sent = 0

    def feed(self, piece: str) -> str:
        """Take the next generated piece; return the text before any call, as it comes."""
        self._raw += piece
        opened = self._raw.find(CALL_OPEN)
        # Before a call, hold back what may be the start of its tag.
        end = opened if opened >= 0 else len(self._raw) - _open_prefix(self._raw)
        fresh = self._raw[self._sent : max(end, self._sent)]
        self._sent = max(end, self._sent)
        return fresh

    def call(self) -> generation_pb2.ToolCall | None:
        """The call in tags once generation ended; None without a whole one."""
        opened = self._raw.find(CALL_OPEN)
        closed = self._raw.find(CALL_CLOSE, opened)
        if opened < 0 or closed < 0:
            return None
        try:
            call = json.loads(self._raw[opened + len(CALL_OPEN) : closed])
        except json.JSONDecodeError:
            return None
        return checked_call(self._parameters, call["name"], call["arguments"])

    def flush(self) -> str:
        """At the end: text held back because it might have begun a tag that never came."""
        if CALL_OPEN in self._raw:
            return ""
        fresh, self._sent = self._raw[self._sent :], len(self._raw)
        return fresh


def checked_call(
    parameters: dict[str, dict[str, Any]], name: str, arguments: object
) -> generation_pb2.ToolCall:
    """A ToolCall with a fresh id, once ``arguments`` validate against ``name``'s schema."""
    try:
        jsonschema.validate(arguments, parameters[name])
    except jsonschema.ValidationError as error:
        failure = InternalError(
            f"the call of {name} does not match its parameters: {error.message}"
        )
        failure.reason = INVALID_TOOL_CALL
        raise failure from None
    return generation_pb2.ToolCall(
        id=f"call_{uuid.uuid4().hex[:24]}", name=name, arguments=compact(arguments)
    )


def _open_prefix(text: str) -> int:
    """Length of the longest end of ``text`` that begins the opening tag."""
    for size in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-size:]):
            return size
    return 0


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


def check_parameter_schemas(conversation: generation_pb2.Conversation) -> None:
    """Raise InvalidArgumentError for a tool whose parameters are no valid JSON schema to
    ``jsonschema`` (which checks the calls), though the grammar engine took them."""
    for index, tool in enumerate(conversation.tools):
        schema = parameters_of(tool)
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as error:
            raise InvalidArgumentError(
                f"input.conversation.tools[{index}].parameters",
                f"is not a valid JSON schema: {error.message}",
            ) from None
