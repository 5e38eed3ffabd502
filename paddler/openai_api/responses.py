"""``POST /v1/responses``: the ``response`` object, whole or as it grows (the event stream is
``response_stream``)."""

from __future__ import annotations

import time

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
        self.reasoning_id = f"rs_{request_id}"
        self.created_at = int(time.time())
        self.model = request.model
        self.text = ""
        self.reasoning = ""
        self.calls: list[generation_pb2.ToolCall] = []

    @property
    def message_index(self) -> int:
        """The message's output index: after the reasoning item, if there is one."""
        return 1 if self.reasoning else 0

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
        """The finished output items: the reasoning (if any), the message (if any), the calls."""
        items = [self.reasoning_item("completed")] if self.reasoning else []
        items += [self.message("completed")] if self.has_message else []
        return items + [self.call_item(call, "completed") for call in self.calls]

    def reasoning_item(self, status: str) -> dict[str, object]:
        """The reasoning output item: the model's reasoning as text, no summary."""
        content = [{"type": "reasoning_text", "text": self.reasoning}]
        return {
            "type": "reasoning",
            "id": self.reasoning_id,
            "status": status,
            "summary": [],
            "content": content if status == "completed" else [],
        }

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
                "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
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
        builder.reasoning += event.reasoning
        if event.tool_call is not None:
            builder.calls.append(event.tool_call)
        summary = event.summary or summary
    return builder.response(summary)


def _format_of(request: ResponseRequest) -> dict[str, object]:
    """The request's ``text.format`` as the response echoes it."""
    if request.text is None or request.text.format is None:
        return {"type": "text"}
    return request.text.format.model_dump(by_alias=True, exclude_none=True)


def _tool_choice_of(request: ResponseRequest) -> object:
    """The request's tool choice as the response echoes it."""
    choice = request.tool_choice
    if choice is None:
        return "auto" if request.tools else "none"
    return choice if isinstance(choice, str) else choice.model_dump()
