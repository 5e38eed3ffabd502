"""The admin panel's prompt playground: what it sends, and the reply as server-sent events."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import BaseModel, Field

from paddler.balancer.generation_relay import GenerationRelay
from paddler.balancer.model_routes import Route
from paddler.common.errors import InvalidArgumentError, PaddlerError
from paddler.common.generation_input import check_generation_input
from paddler.common.image_input import MAX_IMAGES, check_image
from paddler.v1 import agent_pb2, generation_pb2
from paddler.web.app import API


class PanelImage(BaseModel):
    """An image the playground attached to a question: base64 bytes and their type."""

    data: str
    mime_type: str


class PanelMessage(BaseModel):
    """One turn of the playground's conversation (a question may carry images)."""

    role: str
    content: str
    images: list[PanelImage] = Field(default_factory=list, max_length=MAX_IMAGES + 1)


class PlaygroundRequest(BaseModel):
    """What the playground sends: a conversation, its sampling and the thinking switch."""

    messages: Annotated[list[PanelMessage], Field(min_length=1)]
    max_tokens: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: Annotated[int | None, Field(ge=0, le=2**31 - 1)] = None
    # The chat template's enable_thinking; None: not passed.
    thinking: bool | None = None
    # The pool that answers (a pool's name or alias, or a model; "": the pool "default").
    model: Annotated[str, Field(max_length=256)] = ""


def generation_input(body: PlaygroundRequest) -> generation_pb2.GenerationInput:
    """The request's GenerationInput, checked (InvalidArgumentError names the field)."""
    generation = generation_pb2.GenerationInput(
        conversation=generation_pb2.Conversation(
            messages=[_message(m, index) for index, m in enumerate(body.messages)]
        )
    )
    if body.max_tokens is not None:
        generation.max_tokens = body.max_tokens
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(body, name)
        if value is not None:
            setattr(generation.sampling, name, value)
    if body.thinking is not None:
        generation.enable_thinking = body.thinking
    check_generation_input(generation)
    return generation


def _message(message: PanelMessage, index: int) -> generation_pb2.ChatMessage:
    """A turn as ours: its text, then its images as parts."""
    if not message.images:
        return generation_pb2.ChatMessage(role=message.role, content=message.content)
    parts = [generation_pb2.ContentPart(text=message.content)]
    for number, image in enumerate(message.images):
        try:
            data = base64.b64decode(image.data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgumentError(
                f"messages[{index}].images[{number}].data", "is not base64"
            ) from None
        picture = generation_pb2.Image(data=data, mime_type=image.mime_type)
        check_image(picture, f"messages[{index}].images[{number}]")  # named as the panel sent it
        parts.append(generation_pb2.ContentPart(image=picture))
    return generation_pb2.ChatMessage(role=message.role, parts=parts)


async def reply_events(
    relay: GenerationRelay,
    generation: generation_pb2.GenerationInput,
    request_id: str,
    route: Route,
) -> AsyncIterator[str]:
    """``{"reasoning"}`` and ``{"text"}`` pieces as they come, then ``{"summary"}``, or
    ``{"error"}``."""

    def event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    try:
        forwarded = agent_pb2.GenerateRequest(request_id=request_id, input=generation)
        async for chunk in relay.stream(forwarded, None, API, route):
            response = agent_pb2.GenerateResponse.FromString(chunk)
            if response.HasField("summary"):
                summary = response.summary
                yield event(
                    {
                        "summary": {
                            "agent": summary.agent_name,
                            "model": summary.model,
                            "completion_tokens": summary.usage.completion_tokens,
                            "reasoning_tokens": summary.usage.reasoning_tokens,
                            "time_to_first_token_ms": round(
                                summary.time_to_first_token.ToNanoseconds() / 1e6, 1
                            ),
                        }
                    }
                )
            elif response.reasoning:
                yield event({"reasoning": response.reasoning})
            elif response.text:
                yield event({"text": response.text})
    except PaddlerError as error:
        yield event({"error": {"code": error.code.name, "message": error.message}})
