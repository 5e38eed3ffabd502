"""A conversation with tools as a chat template sees it, in the generic format: the tools are
described in the system message, earlier calls are the JSON objects the model wrote, and tool
results are user messages (every template knows that role)."""

from __future__ import annotations

import json

from paddler.common.tool_calls import compact, instructions, offered
from paddler.v1 import generation_pb2


def template_messages(conversation: generation_pb2.Conversation) -> list[tuple[str, str]]:
    """(role, content) pairs for the chat template."""
    tools_on = bool(offered(conversation))
    names = {c.id: c.name for m in conversation.messages for c in m.tool_calls}
    rendered: list[tuple[str, str]] = []
    for message in conversation.messages:
        if message.role == "tool":
            result = {
                "name": names.get(message.tool_call_id, ""),
                "tool_call_id": message.tool_call_id,
                "content": message.content,
            }
            rendered.append(("user", compact({"tool_response": result})))
        elif message.role == "assistant" and message.tool_calls:
            calls = [
                compact(
                    {"tool_call": {"name": c.name, "arguments": json.loads(c.arguments or "{}")}}
                )
                for c in message.tool_calls
            ]
            rendered.append(("assistant", "\n".join(calls)))
        elif message.role == "assistant" and tools_on:
            # As the model wrote it: its next turn's cached prefix stays the same.
            rendered.append(("assistant", compact({"response": message.content})))
        else:
            rendered.append((message.role, message.content))
    if not tools_on:
        return rendered
    guide = instructions(conversation)
    if rendered and rendered[0][0] == "system":
        return [("system", f"{rendered[0][1]}\n\n{guide}"), *rendered[1:]]
    return [("system", guide), *rendered]
