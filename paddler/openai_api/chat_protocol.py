"""The request body of ``POST /v1/chat/completions``, as OpenAI defines it (the fields we serve),
and how it becomes our ``GenerationInput``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from paddler.common.errors import InvalidArgumentError
from paddler.common.tool_calls import MAX_TOOLS
from paddler.openai_api.image_parts import image_from_url
from paddler.openai_api.output_format import ResponseFormat
from paddler.openai_api.remote_images import RemoteImages
from paddler.openai_api.sampling_fields import SamplingFields
from paddler.openai_api.tool_protocol import (
    ChatNamedChoice,
    ChatTool,
    ChatToolCall,
    Mode,
    call,
    chat_field,
    choice,
    openai_fields,
    refuse_beside_tools,
    tool,
)
from paddler.v1 import generation_pb2


class TextPart(BaseModel):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    """``image_url`` of an image part: a base64 ``data:`` URI (``detail`` is not used)."""

    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    """An image part of a user message's content."""

    type: Literal["image_url"]
    image_url: ImageUrl


class OtherPart(BaseModel):
    """Any other content part (audio, a file): refused with a clear error."""

    model_config = ConfigDict(extra="allow")
    type: str


class ChatMessage(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart | ImagePart | OtherPart] | None = None
    name: str | None = None
    # Role "assistant": the calls it made; role "tool": the call this message answers.
    tool_calls: list[ChatToolCall] | None = None
    tool_call_id: str | None = None


class ChatTemplateKwargs(BaseModel):
    """``chat_template_kwargs`` (vLLM's and llama-server's extension): the variables we pass."""

    model_config = ConfigDict(extra="forbid")
    enable_thinking: bool | None = None


# How a reply's reasoning is split (llama-server's ``reasoning_format``; "deepseek": <think>).
REASONING_FORMATS = {
    "auto": generation_pb2.REASONING_FORMAT_UNSPECIFIED,
    "none": generation_pb2.REASONING_FORMAT_NONE,
    "deepseek": generation_pb2.REASONING_FORMAT_THINK_TAGS,
}


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int | None, Field(ge=1)] = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[ChatTool] | None, Field(max_length=MAX_TOOLS)] = None
    tool_choice: Mode | ChatNamedChoice | None = None
    # At most one call per reply is made either way.
    parallel_tool_calls: bool | None = None
    # Passed to the chat template.
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None
    reasoning_format: Literal["auto", "none", "deepseek"] = "auto"
    # Fields that change generation and are not served yet: refused when set.
    top_logprobs: int | None = None

    async def inline_images(self, remote: RemoteImages) -> None:
        """Fetch the images of allowed hosts into data: URIs (others are left to refuse)."""
        found = [
            (part, f"messages[{index}].content[{number}].image_url.url")
            for index, message in enumerate(self.messages)
            for number, part in enumerate(
                message.content if isinstance(message.content, list) else ()
            )
            if isinstance(part, ImagePart)
        ]
        urls = await remote.inline_all([(part.image_url.url, field) for part, field in found])
        for (part, _), url in zip(found, urls, strict=True):
            part.image_url.url = url

    def generation_input(self) -> generation_pb2.GenerationInput:
        """Our GenerationInput for one choice; refuses what we do not serve yet."""
        self.refuse_unsupported(("top_logprobs", self.top_logprobs))
        conversation = generation_pb2.Conversation(
            messages=[_message(message, index) for index, message in enumerate(self.messages)],
            tools=[tool(t.function.name, t.function.description, t.function.parameters)
                   for t in self.tools or ()],
        )  # fmt: skip
        if isinstance(self.tool_choice, ChatNamedChoice):
            conversation.tool_choice.CopyFrom(choice(None, self.tool_choice.function.name))
        elif self.tool_choice is not None:
            conversation.tool_choice.CopyFrom(choice(self.tool_choice, None))
        generation = generation_pb2.GenerationInput(
            conversation=conversation,
            reasoning_effort=self.reasoning_effort or "",
            reasoning_format=REASONING_FORMATS[self.reasoning_format],
        )
        thinking = self.chat_template_kwargs.enable_thinking if self.chat_template_kwargs else None
        if thinking is not None:
            generation.enable_thinking = thinking
        output = self.response_format.grammar() if self.response_format else None
        refuse_beside_tools(
            self.tools,
            self.tool_choice,
            ("response_format", output),
            ("json_schema", self.json_schema),
            ("grammar", self.grammar),
        )
        with openai_fields(chat_field):
            self.fill(generation, self.max_completion_tokens or self.max_tokens, output)
        return generation


def _message(message: ChatMessage, index: int) -> generation_pb2.ChatMessage:
    converted = generation_pb2.ChatMessage(
        role="system" if message.role == "developer" else message.role,
        tool_calls=[
            call(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()
        ],
        tool_call_id=message.tool_call_id or "",
    )
    content = message.content
    if isinstance(content, list) and any(isinstance(part, ImagePart) for part in content):
        converted.parts.extend(_part(part, index, number) for number, part in enumerate(content))
    else:
        converted.content = _text(message, index)
    return converted


def _part(
    part: TextPart | ImagePart | OtherPart, index: int, number: int
) -> generation_pb2.ContentPart:
    """One part of a message with images, as ours (the same order and numbering)."""
    if isinstance(part, TextPart):
        return generation_pb2.ContentPart(text=part.text)
    if isinstance(part, ImagePart):
        field = f"messages[{index}].content[{number}].image_url.url"
        return generation_pb2.ContentPart(image=image_from_url(part.image_url.url, field))
    raise _unserved(part, index, number)


def _text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for number, part in enumerate(content):
        if not isinstance(part, TextPart):
            raise _unserved(part, index, number)
        texts.append(part.text)
    return "".join(texts)


def _unserved(part: ImagePart | OtherPart, index: int, number: int) -> InvalidArgumentError:
    """The refusal of a part that is not text nor a whole image part."""
    field = f"messages[{index}].content[{number}]"
    if part.type == "image_url":
        return InvalidArgumentError(
            f"{field}.image_url",
            "an image_url part needs image_url.url: a base64 data: URI of the image",
        )
    return InvalidArgumentError(
        f"{field}.type",
        f"content parts of type {part.type!r} are not supported; send text or image_url parts",
    )
