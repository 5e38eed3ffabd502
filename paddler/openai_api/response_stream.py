"""``POST /v1/responses`` streamed: the Responses API's events (``response.created`` ...
``response.reasoning_text.delta`` ... ``response.output_text.delta`` ... ``response.completed``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

from paddler.openai_api.generations import Event
from paddler.openai_api.responses import ResponseBuilder
from paddler.openai_api.responses_protocol import ResponseRequest
from paddler.v1 import generation_pb2


async def stream(
    request: ResponseRequest, request_id: str, events: AsyncIterator[Event]
) -> AsyncIterator[str]:
    """The event stream, each event with its type and sequence number: the reasoning item
    (while reasoning comes), then the message (from its first text), then the calls."""
    builder = ResponseBuilder(request, request_id)
    numbers = iter(range(1 << 62))

    def sse(kind: str, **fields: object) -> str:
        payload = {"type": kind, "sequence_number": next(numbers), **fields}
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

    yield sse("response.created", response=builder.response(None))
    yield sse("response.in_progress", response=builder.response(None))
    summary = None
    items = _OpenItems(builder, sse)
    async for event in events:
        if event.reasoning:
            for line in items.reasoning(event.reasoning):
                yield line
        if event.text:
            for line in items.text(event.text):
                yield line
        if event.tool_call is not None:
            for line in items.close_reasoning():
                yield line
            builder.calls.append(event.tool_call)
            for line in _call_events(builder, event.tool_call, sse):
                yield line
        summary = event.summary or summary
    finished = builder.response(summary)
    for line in items.close():
        yield line
    final = "response.incomplete" if finished["status"] == "incomplete" else "response.completed"
    yield sse(final, response=finished)


class _OpenItems:
    """The reasoning and message items of a stream: each announced with its first piece and
    done when the next kind of output begins (or the stream ends)."""

    def __init__(self, builder: ResponseBuilder, sse: Callable[..., str]) -> None:
        self._builder = builder
        self._sse = sse
        self._reasoning_open = False
        self._reasoning_done = False
        self._message_open = False

    def _where(self, item_id: str, index: int) -> dict[str, object]:
        return {"item_id": item_id, "output_index": index, "content_index": 0}

    def reasoning(self, piece: str) -> Iterator[str]:
        """A piece of reasoning (reasoning comes before any text or call)."""
        builder, sse = self._builder, self._sse
        if not self._reasoning_open:
            self._reasoning_open = True
            item = builder.reasoning_item("in_progress")
            yield sse("response.output_item.added", output_index=0, item=item)
        builder.reasoning += piece
        where = self._where(builder.reasoning_id, 0)
        yield sse("response.reasoning_text.delta", **where, delta=piece)

    def close_reasoning(self) -> Iterator[str]:
        """The reasoning item's done events, once."""
        builder, sse = self._builder, self._sse
        if not self._reasoning_open or self._reasoning_done:
            return
        self._reasoning_done = True
        where = self._where(builder.reasoning_id, 0)
        yield sse("response.reasoning_text.done", **where, text=builder.reasoning)
        item = builder.reasoning_item("completed")
        yield sse("response.output_item.done", output_index=0, item=item)

    def text(self, piece: str) -> Iterator[str]:
        """A piece of the message's text."""
        yield from self._open_message()
        self._builder.text += piece
        where = self._where(self._builder.message_id, self._builder.message_index)
        yield self._sse("response.output_text.delta", **where, delta=piece, logprobs=[])

    def close(self) -> Iterator[str]:
        """The end of the stream: the items still open are done (a message is always there
        unless the reply was a call)."""
        builder, sse = self._builder, self._sse
        yield from self.close_reasoning()
        if not builder.has_message:
            return
        yield from self._open_message()
        index = builder.message_index
        where = self._where(builder.message_id, index)
        yield sse("response.output_text.done", **where, text=builder.text, logprobs=[])
        part = {"type": "output_text", "text": builder.text, "annotations": []}
        yield sse("response.content_part.done", **where, part=part)
        item = builder.message("completed")
        yield sse("response.output_item.done", output_index=index, item=item)

    def _open_message(self) -> Iterator[str]:
        builder, sse = self._builder, self._sse
        if self._message_open:
            return
        yield from self.close_reasoning()
        self._message_open = True
        index = builder.message_index
        item = builder.message("in_progress")
        yield sse("response.output_item.added", output_index=index, item=item)
        empty = {"type": "output_text", "text": "", "annotations": []}
        yield sse(
            "response.content_part.added", **self._where(builder.message_id, index), part=empty
        )


def _call_events(
    builder: ResponseBuilder, call: generation_pb2.ToolCall, sse: Callable[..., str]
) -> Iterator[str]:
    """A whole call's events: the item added, its arguments in one delta, done."""
    index = len(builder.calls) - 1 + (1 if builder.text else 0) + builder.message_index
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
