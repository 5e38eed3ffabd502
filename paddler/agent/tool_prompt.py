"""How a conversation with tools reaches the model, in one of two formats.

- **Generic** (llama.cpp's, for chat templates with no tool syntax, such as SmolLM2's and
  Gemma's): the tools are described in the system message, earlier calls are the JSON objects
  the model wrote, tool results are user messages (every template knows that role), and the
  reply is constrained to one JSON object (see ``paddler.common.tool_calls``).
- **Hermes** (templates that take ``tools`` and write calls as ``<tool_call>{...}</tool_call>``:
  Hermes, Qwen 2.5 and 3, ...): the template gets the tools and the history in OpenAI's shape
  and describes them its own way; a call is constrained once the model opens ``<tool_call>``
  (from the first token when a call is required), and text before it is free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from llguidance import LLMatcher

from paddler.agent.message_text import message_text
from paddler.agent.tool_reply import CALL_CLOSE, CALL_OPEN, GenericReply, HermesReply, ReplyReader
from paddler.common.tool_calls import (
    call_schema,
    compact,
    must_call,
    offered,
    parameters_of,
)
from paddler.v1 import generation_pb2

# Compact JSON inside the call, as in the generic format.
_COMPACT = {"whitespace_flexible": False}

Message = dict[str, object]


@dataclass(frozen=True)
class ToolPrompt:
    """What the template renders, and how the reply is constrained and read."""

    messages: list[Message]
    # OpenAI-shaped tools for a template with its own tool syntax.
    tools: list[Message] | None = None
    # The reply's grammar when it is not the generic one the request was checked with.
    grammar: str | None = None
    # Text that starts the grammar (free text before it); None: it holds from the first token.
    trigger: str | None = None
    reader: ReplyReader | None = None


def uses_hermes_calls(template: str) -> bool:
    """Whether a chat template takes ``tools`` and writes calls in ``<tool_call>`` tags."""
    return "tools" in template and CALL_OPEN in template


def generic_prompt(conversation: generation_pb2.Conversation) -> ToolPrompt:
    """The conversation in the generic format."""
    tools = offered(conversation)
    names = _call_names(conversation)
    messages: list[Message] = []
    for message in conversation.messages:
        if message.role == "tool":
            result = {
                "name": names.get(message.tool_call_id, ""),
                "tool_call_id": message.tool_call_id,
                "content": message.content,
            }
            messages.append(_plain("user", compact({"tool_response": result})))
        elif message.role == "assistant" and message.tool_calls:
            calls = [
                compact({"tool_call": {"name": c.name, "arguments": _arguments(c)}})
                for c in message.tool_calls
            ]
            messages.append(_plain("assistant", "\n".join(calls)))
        elif message.role == "assistant" and tools:
            # As the model wrote it: its next turn's cached prefix stays the same.
            messages.append(_plain("assistant", compact({"response": message.content})))
        else:
            messages.append(_plain(message.role, message_text(message)))
    if not tools:
        return ToolPrompt(messages)
    guide = instructions(conversation)
    if messages and messages[0]["role"] == "system":
        messages[0] = _plain("system", f"{messages[0]['content']}\n\n{guide}")
    else:
        messages.insert(0, _plain("system", guide))
    parameters = {tool.name: parameters_of(tool) for tool in tools}
    return ToolPrompt(messages, reader=GenericReply(parameters))


def hermes_prompt(conversation: generation_pb2.Conversation) -> ToolPrompt:
    """The conversation for a template with ``<tool_call>`` syntax."""
    messages: list[Message] = []
    for message in conversation.messages:
        rendered = _plain(message.role, message_text(message))
        if message.tool_calls:
            rendered["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": _arguments(call)},
                }
                for call in message.tool_calls
            ]
        if message.role == "tool":
            rendered["tool_call_id"] = message.tool_call_id
        messages.append(rendered)
    tools = offered(conversation)
    if not tools:
        return ToolPrompt(messages)
    schema = {**call_schema(tools), "x-guidance": _COMPACT}
    forced = must_call(conversation.tool_choice)
    # Lark: the opening tag (unless the trigger wrote it), the call, the closing tag.
    opening = json.dumps(f"{CALL_OPEN}\n" if forced else "\n")
    closing = json.dumps(f"\n{CALL_CLOSE}")
    lark = f"start: {opening} call {closing}\ncall: %json {json.dumps(schema)}"
    described: list[Message] = [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": parameters_of(tool),
            },
        }
        for tool in conversation.tools
    ]
    parameters = {tool.name: parameters_of(tool) for tool in tools}
    return ToolPrompt(
        messages,
        tools=described,
        grammar=LLMatcher.grammar_from_lark(lark),
        trigger=None if forced else CALL_OPEN,
        reader=HermesReply(parameters),
    )


def instructions(conversation: generation_pb2.Conversation) -> str:
    """What the system message tells the model about its tools and the reply's form."""
    tools = [
        {"name": t.name, "description": t.description, "parameters": parameters_of(t)}
        for t in offered(conversation)
    ]
    call = '{"tool_call": {"name": <tool name>, "arguments": <its arguments>}}'
    if must_call(conversation.tool_choice):
        form = f"Reply with one JSON object that calls a tool: {call}."
    else:
        form = (
            f"Reply with one JSON object: {call} to call a tool, or "
            '{"response": <your answer as text>} to answer directly.'
        )
    return f"You can call these tools:\n{json.dumps(tools, indent=1)}\n{form}"


def _plain(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def _call_names(conversation: generation_pb2.Conversation) -> dict[str, str]:
    return {c.id: c.name for m in conversation.messages for c in m.tool_calls}


def _arguments(call: generation_pb2.ToolCall) -> object:
    return json.loads(call.arguments or "{}")
