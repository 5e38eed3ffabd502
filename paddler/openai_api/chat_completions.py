"""``POST /v1/chat/completions``: one ``chat.completion``, or a stream of
``chat.completion.chunk`` events ending ``data: [DONE]``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from paddler.openai_api.chat_protocol import ChatCompletionRequest
from paddler.openai_api.generations import Event, gather_choices
from paddler.openai_api.usage import finish_reason, served_by, usage
from paddler.v1 import generation_pb2


def completion(
    request: ChatCompletionRequest, request_id: str, events: list[Event]
) -> dict[str, object]:
    """The whole ``chat.completion`` from every event of every choice."""
    gathered = gather_choices(events, request.n, request.model)
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": gathered.model,
        "choices": [
            {
                "index": index,
                "message": _message(
                    gathered.texts[index], gathered.reasonings[index], gathered.tool_calls[index]
                ),
                "finish_reason": finish_reason(gathered.summaries[index]),
                "logprobs": None,
                "paddler": served_by(gathered.summaries[index]),
            }
            for index in range(request.n)
        ],
        "usage": usage(gathered.summaries, request.n),
    }


def _message(text: str, reasoning: str, calls: list[generation_pb2.ToolCall]) -> dict[str, object]:
    message: dict[str, object] = {"role": "assistant", "content": text or None if calls else text}
    if reasoning:  # as llama-server, vLLM and DeepSeek's API name it
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [_call(call) for call in calls]
    return message


def _call(call: generation_pb2.ToolCall, index: int | None = None) -> dict[str, object]:
    """A call as OpenAI writes it (``index`` in a stream's delta)."""
    body: dict[str, object] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    return body if index is None else {"index": index, **body}


def _sse(payload: dict[str, object]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def chunks(
    request: ChatCompletionRequest, request_id: str, events: AsyncIterator[Event]
) -> AsyncIterator[str]:
    """SSE events: each choice's role first, then its content deltas, then its finish reason;
    the usage chunk when asked; then ``[DONE]``."""
    created = int(time.time())
    summaries: dict[int, generation_pb2.GenerationSummary] = {}

    def chunk(choices: list[dict[str, object]], model: str) -> dict[str, object]:
        return {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }

    model = request.model
    for index in range(request.n):
        delta = {"role": "assistant", "content": ""}
        yield _sse(chunk([{"index": index, "delta": delta, "finish_reason": None}], model))
    calls: dict[int, int] = {}
    async for event in events:
        if event.tool_call is not None:
            number = calls[event.index] = calls.get(event.index, -1) + 1
            called = {"tool_calls": [_call(event.tool_call, number)]}
            yield _sse(
                chunk([{"index": event.index, "delta": called, "finish_reason": None}], model)
            )
            continue
        if event.summary is None:
            if event.text or event.reasoning:
                delta = {"content": event.text}
                if event.reasoning:
                    delta = {"reasoning_content": event.reasoning}
                choice = {"index": event.index, "delta": delta, "finish_reason": None}
                yield _sse(chunk([choice], model))
            continue
        summaries[event.index] = event.summary
        model = event.summary.model or model
        choice = {
            "index": event.index,
            "delta": {},
            "finish_reason": finish_reason(event.summary),
            "paddler": served_by(event.summary),
        }
        yield _sse(chunk([choice], model))
    if request.include_usage:
        counted = usage([summaries[index] for index in sorted(summaries)], request.n)
        yield _sse({**chunk([], model), "usage": counted})
    yield "data: [DONE]\n\n"
