"""Tool calling in the generic format (llama.cpp's, for chat templates with no tool syntax of
their own): the tools are described in the system message, and the reply is one JSON object,
``{"tool_call": {"name": ..., "arguments": {...}}}`` or ``{"response": "..."}``, constrained by
a JSON schema built from the tools and the tool choice. Everything here needs no model."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from paddler.common.errors import InvalidArgumentError
from paddler.common.grammar import MAX_GRAMMAR_BYTES, compile_grammar
from paddler.v1 import generation_pb2

MAX_TOOLS = 128
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_FIELD = "input.conversation"
_NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
_TEXT_BRANCH = {
    "type": "object",
    "properties": {"response": {"type": "string"}},
    "required": ["response"],
    "additionalProperties": False,
}


def compact(value: object) -> str:
    """JSON as the grammar makes the model write it: no spaces, UTF-8 kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parameters_of(tool: generation_pb2.Tool) -> dict[str, Any]:
    """The tool's argument schema (an empty object when it takes none)."""
    if not tool.parameters:
        return _NO_ARGUMENTS
    parsed: dict[str, Any] = json.loads(tool.parameters)
    return parsed


def offered(conversation: generation_pb2.Conversation) -> list[generation_pb2.Tool]:
    """The tools the model may call in this reply: none with tool choice NONE, one when a
    function is named."""
    choice = conversation.tool_choice
    if choice.WhichOneof("choice") == "function":
        return [tool for tool in conversation.tools if tool.name == choice.function]
    if choice.mode == generation_pb2.TOOL_CHOICE_MODE_NONE:
        return []
    return list(conversation.tools)


def call_schema(tools: Sequence[generation_pb2.Tool]) -> dict[str, Any]:
    """The JSON schema of one call, ``{"name": ..., "arguments": {...}}``, of one of ``tools``."""
    calls = [
        {
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": parameters_of(tool)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def must_call(choice: generation_pb2.ToolChoice) -> bool:
    """Whether the reply has to be a call (REQUIRED, or a function named)."""
    return (
        choice.WhichOneof("choice") == "function"
        or choice.mode == generation_pb2.TOOL_CHOICE_MODE_REQUIRED
    )


def reply_schema(conversation: generation_pb2.Conversation) -> dict[str, Any] | None:
    """The JSON schema of a reply under the conversation's tools, or None without any."""
    tools = offered(conversation)
    if not tools:
        return None
    call_branch = {
        "type": "object",
        "properties": {"tool_call": call_schema(tools)},
        "required": ["tool_call"],
        "additionalProperties": False,
    }
    if must_call(conversation.tool_choice):
        return call_branch
    return {"anyOf": [call_branch, _TEXT_BRANCH]}


def check_tools(conversation: generation_pb2.Conversation) -> None:
    """Raise InvalidArgumentError naming the first tool field to fix."""
    names = set()
    if len(conversation.tools) > MAX_TOOLS:
        raise InvalidArgumentError(
            f"{_FIELD}.tools", f"has {len(conversation.tools)} tools; the limit is {MAX_TOOLS}"
        )
    # The tools' schemas make one grammar together: bounded as one before any is compiled.
    total = sum(len(tool.parameters.encode()) for tool in conversation.tools)
    if total > MAX_GRAMMAR_BYTES:
        raise InvalidArgumentError(
            f"{_FIELD}.tools",
            f"the tools' parameter schemas are {total} bytes together; the limit is "
            f"{MAX_GRAMMAR_BYTES} bytes (64 KiB)",
        )
    for index, tool in enumerate(conversation.tools):
        field = f"{_FIELD}.tools[{index}]"
        if not _NAME.fullmatch(tool.name):
            raise InvalidArgumentError(
                f"{field}.name",
                f"{tool.name!r} is not a tool name: use 1 to 64 letters, digits, _ or -",
            )
        if tool.name in names:
            raise InvalidArgumentError(f"{field}.name", f"{tool.name!r} is given twice")
        names.add(tool.name)
        _check_parameters(tool.parameters, f"{field}.parameters")
    _check_choice(conversation.tool_choice, names)
    _check_messages(conversation.messages)


def _check_parameters(text: str, field: str) -> None:
    if not text:
        return
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidArgumentError(field, f"is not valid JSON: {error}") from None
    if not isinstance(parsed, dict) or parsed.get("type", "object") != "object":
        raise InvalidArgumentError(field, 'must be a JSON schema of an object ("type": "object")')
    compile_grammar(generation_pb2.Grammar(json_schema=text), field)


def _check_choice(choice: generation_pb2.ToolChoice, names: set[str]) -> None:
    field = f"{_FIELD}.tool_choice"
    kind = choice.WhichOneof("choice")
    if kind == "function" and choice.function not in names:
        raise InvalidArgumentError(
            f"{field}.function",
            f"{choice.function!r} is not one of the tools ({', '.join(sorted(names)) or 'none'})",
        )
    if kind == "mode" and choice.mode not in generation_pb2.ToolChoiceMode.values():
        raise InvalidArgumentError(f"{field}.mode", f"unknown tool choice mode {choice.mode}")
    if must_call(choice) and not names:
        raise InvalidArgumentError(field, "a tool call is required but no tools are given")


def _check_messages(messages: Sequence[generation_pb2.ChatMessage]) -> None:
    for index, message in enumerate(messages):
        field = f"{_FIELD}.messages[{index}]"
        if message.tool_calls and message.role != "assistant":
            raise InvalidArgumentError(
                f"{field}.tool_calls", "only assistant messages carry tool calls"
            )
        for number, call in enumerate(message.tool_calls):
            try:
                arguments = json.loads(call.arguments or "{}")
            except json.JSONDecodeError as error:
                raise InvalidArgumentError(
                    f"{field}.tool_calls[{number}].arguments", f"is not valid JSON: {error}"
                ) from None
            if not isinstance(arguments, dict):
                raise InvalidArgumentError(
                    f"{field}.tool_calls[{number}].arguments", "must be a JSON object"
                )
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidArgumentError(
                f"{field}.tool_call_id", "a tool message names the call it answers"
            )
