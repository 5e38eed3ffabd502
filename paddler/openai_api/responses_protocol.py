"""The request body of ``POST /v1/responses`` (the Responses API, text in and out), and how it
becomes our ``GenerationInput``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from paddler.common.errors import InvalidArgumentError
from paddler.common.generation_input import check_generation_input
from paddler.openai_api.output_format import TextOptions
from paddler.openai_api.sampling_fields import SamplingFields
from paddler.v1 import generation_pb2

_TEXT_PARTS = ("input_text", "output_text", "text")


class ContentPart(BaseModel):
    """A part of an input message's content; only text parts are served."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class InputMessage(BaseModel):
    """A message item of ``input``."""

    model_config = ConfigDict(extra="allow")
    type: Literal["message"] = "message"
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]


class ResponseRequest(BaseModel):
    """``POST /v1/responses``."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | Annotated[list[InputMessage], Field(min_length=1)]
    instructions: str | None = None
    max_output_tokens: Annotated[int | None, Field(ge=1)] = None
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None
    top_p: Annotated[float | None, Field(gt=0, le=1)] = None
    stream: bool = False
    user: str | None = None
    # llama-server's extras, as on the other endpoints.
    top_k: Annotated[int | None, Field(ge=0)] = None
    min_p: Annotated[float | None, Field(ge=0, le=1)] = None
    repeat_penalty: Annotated[float | None, Field(gt=0)] = None
    # Fields that change generation and are not served yet: refused when set.
    tools: list[Any] | None = None
    tool_choice: Any = None
    previous_response_id: str | None = None
    text: TextOptions | None = None
    top_logprobs: int | None = None
    reasoning: dict[str, Any] | None = None

    def generation_input(self) -> generation_pb2.GenerationInput:
        """Our GenerationInput; refuses what we do not serve yet."""
        SamplingFields.refuse_unsupported(
            ("tools", self.tools),
            ("tool_choice", self.tool_choice),
            ("previous_response_id", self.previous_response_id),
            ("top_logprobs", self.top_logprobs),
            ("reasoning", self.reasoning),
        )
        messages = []
        if self.instructions:
            messages.append(generation_pb2.ChatMessage(role="system", content=self.instructions))
        if isinstance(self.input, str):
            messages.append(generation_pb2.ChatMessage(role="user", content=self.input))
        else:
            for index, item in enumerate(self.input):
                role = "system" if item.role == "developer" else item.role
                messages.append(generation_pb2.ChatMessage(role=role, content=_text(item, index)))
        generation = generation_pb2.GenerationInput(
            conversation=generation_pb2.Conversation(messages=messages)
        )
        if self.max_output_tokens is not None:
            generation.max_tokens = self.max_output_tokens
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty"):
            value = getattr(self, name)
            if value is not None:
                setattr(generation.sampling, name, value)
        if self.text is not None and self.text.format is not None:
            output = self.text.format.grammar()
            if output is not None:
                generation.grammar.CopyFrom(output)
        check_generation_input(generation)
        return generation


def _text(item: InputMessage, index: int) -> str:
    if isinstance(item.content, str):
        return item.content
    texts = []
    for number, part in enumerate(item.content):
        if part.type not in _TEXT_PARTS or part.text is None:
            raise InvalidArgumentError(
                f"input[{index}].content[{number}].type",
                f"content parts of type {part.type!r} are not supported; send input_text parts",
            )
        texts.append(part.text)
    return "".join(texts)
