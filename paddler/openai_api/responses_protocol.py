"""The request body of ``POST /v1/responses`` (the Responses API, text in and out), and how it
becomes our ``GenerationInput``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from paddler.common.errors import InvalidArgumentError
from paddler.common.generation_input import check_generation_input
from paddler.common.image_input import check_image
from paddler.common.tool_calls import MAX_TOOLS
from paddler.openai_api.image_parts import image_from_url
from paddler.openai_api.output_format import TextOptions
from paddler.openai_api.remote_images import RemoteImages
from paddler.openai_api.sampling_fields import SamplingFields, User
from paddler.openai_api.tool_protocol import (
    FunctionTool,
    Mode,
    NamedChoice,
    call,
    choice,
    openai_fields,
    refuse_beside_tools,
    responses_field,
    tool,
)
from paddler.v1 import generation_pb2

_TEXT_PARTS = ("input_text", "output_text", "text")


class ContentPart(BaseModel):
    """A part of an input message's content: text, or an image as a base64 ``data:`` URI
    (``input_image``; a ``file_id`` is refused)."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None
    image_url: str | None = None
    file_id: str | None = None


class InputMessage(BaseModel):
    """A message item of ``input``."""

    model_config = ConfigDict(extra="allow")
    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]


class FunctionCallItem(BaseModel):
    """A call the model made earlier, sent back in ``input``."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1)]
    name: str
    arguments: str


class FunctionCallOutputItem(BaseModel):
    """A call's result, in ``input``."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1)]
    output: str


InputItem = InputMessage | FunctionCallItem | FunctionCallOutputItem


class ReasoningOptions(BaseModel):
    """``reasoning``: the effort goes to the chat template; summaries are not made."""

    model_config = ConfigDict(extra="forbid")
    effort: Literal["minimal", "low", "medium", "high"] | None = None
    summary: str | None = None


class ResponseRequest(BaseModel):
    """``POST /v1/responses``."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | Annotated[list[InputItem], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: Annotated[int | None, Field(ge=1)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(gt=0, le=1)] = None
    stream: bool = False
    user: User = None
    # llama-server's extras, as on the other endpoints.
    top_k: Annotated[int | None, Field(ge=0)] = None
    min_p: Annotated[float | None, Field(ge=0, le=1)] = None
    repeat_penalty: Annotated[float | None, Field(gt=0)] = None
    tools: Annotated[list[FunctionTool] | None, Field(max_length=MAX_TOOLS)] = None
    tool_choice: Mode | NamedChoice | None = None
    # At most one call per reply is made either way.
    parallel_tool_calls: bool | None = None
    # Fields that change generation and are not served yet: refused when set.
    previous_response_id: str | None = None
    text: TextOptions | None = None
    top_logprobs: int | None = None
    reasoning: ReasoningOptions | None = None

    async def inline_images(self, remote: RemoteImages) -> None:
        """Fetch the images of allowed hosts into data: URIs (others are left to refuse)."""
        found = [
            (part, part.image_url, f"input[{index}].content[{number}].image_url")
            for index, item in enumerate(self.input if isinstance(self.input, list) else ())
            if isinstance(item, InputMessage) and not isinstance(item.content, str)
            for number, part in enumerate(item.content)
            if part.type == "input_image" and part.image_url is not None
        ]
        urls = await remote.inline_all([(url, field) for _, url, field in found])
        for (part, _, _), url in zip(found, urls, strict=True):
            part.image_url = url

    def generation_input(self) -> generation_pb2.GenerationInput:
        """Our GenerationInput; refuses what we do not serve yet."""
        SamplingFields.refuse_unsupported(
            ("previous_response_id", self.previous_response_id),
            ("top_logprobs", self.top_logprobs),
            ("reasoning.summary", self.reasoning.summary if self.reasoning else None),
        )
        messages = []
        if self.instructions:
            messages.append(generation_pb2.ChatMessage(role="system", content=self.instructions))
        if isinstance(self.input, str):
            messages.append(generation_pb2.ChatMessage(role="user", content=self.input))
        else:
            messages.extend(_messages(self.input))
        conversation = generation_pb2.Conversation(
            messages=messages,
            tools=[tool(t.name, t.description, t.parameters) for t in self.tools or ()],
        )
        if isinstance(self.tool_choice, NamedChoice):
            conversation.tool_choice.CopyFrom(choice(None, self.tool_choice.name))
        elif self.tool_choice is not None:
            conversation.tool_choice.CopyFrom(choice(self.tool_choice, None))
        generation = generation_pb2.GenerationInput(conversation=conversation)
        if self.reasoning is not None and self.reasoning.effort is not None:
            generation.reasoning_effort = self.reasoning.effort
        if self.max_output_tokens is not None:
            generation.max_tokens = self.max_output_tokens
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty"):
            value = getattr(self, name)
            if value is not None:
                setattr(generation.sampling, name, value)
        if self.text is not None and self.text.format is not None:
            output = self.text.format.grammar()
            refuse_beside_tools(self.tools, self.tool_choice, ("text.format", output))
            if output is not None:
                generation.grammar.CopyFrom(output)
        with openai_fields(responses_field):
            check_generation_input(generation)
        return generation


def _messages(items: list[InputItem]) -> list[generation_pb2.ChatMessage]:
    """Input items as messages: consecutive calls make one assistant message, each output a
    tool message."""
    messages: list[generation_pb2.ChatMessage] = []
    for index, item in enumerate(items):
        if isinstance(item, FunctionCallItem):
            made = call(item.call_id, item.name, item.arguments)
            if messages and messages[-1].role == "assistant" and messages[-1].tool_calls:
                messages[-1].tool_calls.append(made)
            else:
                messages.append(generation_pb2.ChatMessage(role="assistant", tool_calls=[made]))
        elif isinstance(item, FunctionCallOutputItem):
            messages.append(
                generation_pb2.ChatMessage(
                    role="tool", tool_call_id=item.call_id, content=item.output
                )
            )
        else:
            role = "system" if item.role == "developer" else item.role
            message = generation_pb2.ChatMessage(role=role)
            parts = item.content if isinstance(item.content, list) else []
            if any(part.type == "input_image" for part in parts):
                message.parts.extend(_part(part, index, n) for n, part in enumerate(parts))
            else:
                message.content = _text(item, index)
            messages.append(message)
    return messages


def _part(part: ContentPart, index: int, number: int) -> generation_pb2.ContentPart:
    """One part of a message with images, as ours (the same order and numbering)."""
    field = f"input[{index}].content[{number}]"
    if part.type == "input_image":
        if part.file_id is not None or part.image_url is None:
            raise InvalidArgumentError(
                f"{field}.image_url", "send the image as a base64 data: URI in image_url"
            )
        image = image_from_url(part.image_url, f"{field}.image_url")
        check_image(image, f"{field}.image_url")  # named as the client wrote it
        return generation_pb2.ContentPart(image=image)
    if part.type not in _TEXT_PARTS or part.text is None:
        raise InvalidArgumentError(
            f"{field}.type",
            f"content parts of type {part.type!r} are not supported; send input_text or "
            "input_image parts",
        )
    return generation_pb2.ContentPart(text=part.text)


def _text(item: InputMessage, index: int) -> str:
    if isinstance(item.content, str):
        return item.content
    texts = []
    for number, part in enumerate(item.content):
        if part.type not in _TEXT_PARTS or part.text is None:
            raise InvalidArgumentError(
                f"input[{index}].content[{number}].type",
                f"content parts of type {part.type!r} are not supported; send input_text or "
                "input_image parts",
            )
        texts.append(part.text)
    return "".join(texts)
