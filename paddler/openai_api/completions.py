"""``POST /v1/completions``: one ``text_completion``, or a stream of them ending
``data: [DONE]``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from paddler.openai_api.completion_protocol import CompletionRequest
from paddler.openai_api.generations import Event, gather_choices
from paddler.openai_api.usage import finish_reason, served_by, usage
from paddler.v1 import generation_pb2


def completion(
    request: CompletionRequest, request_id: str, events: list[Event]
) -> dict[str, object]:
    """The whole ``text_completion`` from every event of every choice."""
    choices = len(request.prompts) * request.n
    gathered = gather_choices(events, choices, request.model)
    return {
        "id": f"cmpl-{request_id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": gathered.model,
        "choices": [
            {
                "index": index,
                "text": gathered.texts[index],
                "finish_reason": finish_reason(gathered.summaries[index]),
                "logprobs": None,
                "paddler": served_by(gathered.summaries[index]),
            }
            for index in range(choices)
        ],
        "usage": usage(gathered.summaries, request.n),
    }


async def chunks(
    request: CompletionRequest, request_id: str, events: AsyncIterator[Event]
) -> AsyncIterator[str]:
    """SSE events: text pieces per choice, each choice's finish reason, the usage when asked."""
    created = int(time.time())
    summaries: dict[int, generation_pb2.GenerationSummary] = {}
    model = request.model

    def event_of(
        index: int, text: str, summary: generation_pb2.GenerationSummary | None = None
    ) -> str:
        reason = None if summary is None else finish_reason(summary)
        choice = {"index": index, "text": text, "finish_reason": reason, "logprobs": None}
        if summary is not None:
            choice["paddler"] = served_by(summary)
        payload = {
            "id": f"cmpl-{request_id}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
        }
        return f"data: {json.dumps(payload)}\n\n"

    async for event in events:
        if event.summary is None:
            if event.text:
                yield event_of(event.index, event.text)
            continue
        summaries[event.index] = event.summary
        model = event.summary.model or model
        yield event_of(event.index, "", event.summary)
    if request.include_usage:
        payload = {
            "id": f"cmpl-{request_id}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [],
            "usage": usage([summaries[index] for index in sorted(summaries)], request.n),
        }
        yield f"data: {json.dumps(payload)}\n\n"
    yield "data: [DONE]\n\n"
