"""``POST /v1/responses``: one ``response`` object, or the Responses API's event stream
(``response.created`` ... ``response.output_text.delta`` ... ``response.completed``)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator

from paddler.openai_api.generations import Event
from paddler.openai_api.responses_protocol import ResponseRequest
from paddler.v1 import generation_pb2

_CUT_SHORT = (generation_pb2.FINISH_REASON_MAX_TOKENS, generation_pb2.FINISH_REASON_CONTEXT_FULL)


class ResponseBuilder:
    """The response object of one request, as it grows."""

    def __init__(self, request: ResponseRequest, request_id: str) -> None:
        self.request = request
        self.id = f"resp_{request_id}"
        self.message_id = f"msg_{request_id}"
        self.created_at = int(time.time())
        self.model = request.model
        self.text = ""
        self.calls: list[generation_pb2.ToolCall] = []

    @property
    def has_message(self) -> bool:
        """Whether the output holds a message: any text, or no call either."""
        return bool(self.text) or not self.calls

    def call_item(self, call: generation_pb2.ToolCall, status: str) -> dict[str, object]:
        """A function_call output item."""
        return {
            "type": "function_call",
            "id": f"fc_{call.id.removeprefix('call_')}",
            "call_id": call.id,
            "name": call.name,
            "arguments": call.arguments if status == "completed" else "",
            "status": status,
        }

    def output(self) -> list[dict[str, object]]:
        """The finished output items: the message (if any), then the calls."""
        items = [self.message("completed")] if self.has_message else []
        return items + [self.call_item(call, "completed") for call in self.calls]

    def message(self, status: str) -> dict[str, object]:
        """The assistant message item."""
        content = [{"type": "output_text", "text": self.text, "annotations": []}]
        return {
            "type": "message",
            "id": self.message_id,
            "status": status,
            "role": "assistant",
            "content": content if status == "completed" else [],
        }

    def response(self, summary: generation_pb2.GenerationSummary | None) -> dict[str, object]:
        """The response object: in progress without a summary, finished with one."""
        request = self.request
        body: dict[str, object] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "in_progress",
            "model": self.model,
            "output": [],
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "user": request.user,
            "parallel_tool_calls": False,
            "tool_choice": _tool_choice_of(request),
            "tools": [tool.model_dump(exclude_none=True) for tool in request.tools or ()],
            "text": {"format": _format_of(request)},
            "error": None,
            "incomplete_details": None,
            "metadata": {},
            "usage": None,
        }
        if summary is None:
            return body
        self.model = summary.model or self.model
        cut_short = summary.finish_reason in _CUT_SHORT
        usage = summary.usage
        body.update(
            model=self.model,
            status="incomplete" if cut_short else "completed",
            incomplete_details={"reason": "max_output_tokens"} if cut_short else None,
            output=self.output(),
            usage={
                "input_tokens": usage.prompt_tokens,
                "input_tokens_details": {"cached_tokens": usage.cached_tokens},
                "output_tokens": usage.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            },
        )
        return body


def whole(request: ResponseRequest, request_id: str, events: list[Event]) -> dict[str, object]:
    """The finished response from every event."""
    builder = ResponseBuilder(request, request_id)
    summary = None
    for event in events:
        builder.text += event.text
        if event.tool_call is not None:
            builder.calls.append(event.tool_call)
        summary = event.summary or summary
    return builder.response(summary)


async def stream(
    request: ResponseRequest, request_id: str, events: AsyncIterator[Event]
) -> AsyncIterator[str]:
    """The event stream, each event with its type and sequence number."""
    builder = ResponseBuilder(request, request_id)
    numbers = iter(range(1 << 62))
    where = {"item_id": builder.message_id, "output_index": 0, "content_index": 0}

    def sse(kind: str, **fields: object) -> str:
        payload = {"type": kind, "sequence_number": next(numbers), **fields}
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

    def opened() -> Iterator[str]:
        yield sse("response.output_item.added", output_index=0, item=builder.message("in_progress"))
        empty = {"type": "output_text", "text": "", "annotations": []}
        yield sse("response.content_part.added", **where, part=empty)

    yield sse("response.created", response=builder.response(None))
    yield sse("response.in_progress", response=builder.response(None))
    summary = None
    # The message is announced with its first text: a reply that is a tool call has none.
    message_open = False
    async for event in events:
        if event.text:
            if not message_open:
                message_open = True
                for line in opened():
                    yield line
            builder.text += event.text
            yield sse("response.output_text.delta", **where, delta=event.text, logprobs=[])
        if event.tool_call is not None:
            builder.calls.append(event.tool_call)
            for line in _call_events(builder, event.tool_call, sse):
                yield line
        summary = event.summary or summary
    finished = builder.response(summary)
    if builder.has_message:
        if not message_open:
            for line in opened():
                yield line
        yield sse("response.output_text.done", **where, text=builder.text, logprobs=[])
        part = {"type": "output_text", "text": builder.text, "annotations": []}
        yield sse("response.content_part.done", **where, part=part)
        yield sse("response.output_item.done", output_index=0, item=builder.message("completed"))
    final = "response.incomplete" if finished["status"] == "incomplete" else "response.completed"
    yield sse(final, response=finished)


def _format_of(request: ResponseRequest) -> dict[str, object]:
    """The request's ``text.format`` as the response echoes it."""
    if request.text is None or request.text.format is None:
        return {"type": "text"}
    return request.text.format.model_dump(by_alias=True, exclude_none=True)


def _call_events(
    builder: ResponseBuilder, call: generation_pb2.ToolCall, sse: Callable[..., str]
) -> Iterator[str]:
    """A whole call's events: the item added, its arguments in one delta, done."""
    index = len(builder.calls) - 1 + (1 if builder.text else 0)
    item_id = builder.call_item(call, "completed")["id"]
    where = {"item_id": item_id, "output_index": index}
    yield sse(
        "response.output_item.added",
        output_index=index,
        item=builder.call_item(call, "in_progress"),
    )
    yield sse("response.function_call_arguments.delta", **where, delta=call.arguments)
    yield sse(
        "response.function_call_arguments.done", **where, name=call.name, arguments=call.arguments
    )
    yield sse(
        "response.output_item.done", output_index=index, item=builder.call_item(call, "completed")
    )


def _tool_choice_of(request: ResponseRequest) -> object:
    """The request's tool choice as the response echoes it."""
    choice = request.tool_choice
    if choice is None:
        return "auto" if request.tools else "none"
    return choice if isinstance(choice, str) else choice.model_dump()
