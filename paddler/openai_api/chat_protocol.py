"""The request body of ``POST /v1/chat/completions``, as OpenAI defines it (the fields we serve),
and how it becomes our ``GenerationInput``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from paddler.common.errors import InvalidArgumentError
from paddler.openai_api.output_format import ResponseFormat
from paddler.openai_api.sampling_fields import SamplingFields
from paddler.v1 import generation_pb2


class TextPart(BaseModel):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class OtherPart(BaseModel):
    """Any other content part (an image, audio, a file): refused with a clear error."""

    model_config = ConfigDict(extra="allow")
    type: str


class ChatMessage(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart | OtherPart] | None = None
    name: str | None = None


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int | None, Field(ge=1)] = None
    response_format: ResponseFormat | None = None
    # Fields that change generation and are not served yet: refused when set.
    tools: list[Any] | None = None
    tool_choice: Any = None
    top_logprobs: int | None = None

    def generation_input(self) -> generation_pb2.GenerationInput:
        """Our GenerationInput for one choice; refuses what we do not serve yet."""
        self.refuse_unsupported(
            ("tools", self.tools),
            ("tool_choice", self.tool_choice),
            ("top_logprobs", self.top_logprobs),
        )
        messages = [
            generation_pb2.ChatMessage(
                role="system" if message.role == "developer" else message.role,
                content=_text(message, index),
            )
            for index, message in enumerate(self.messages)
        ]
        generation = generation_pb2.GenerationInput(
            conversation=generation_pb2.Conversation(messages=messages)
        )
        output = self.response_format.grammar() if self.response_format else None
        self.fill(generation, self.max_completion_tokens or self.max_tokens, output)
        return generation


def _text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for number, part in enumerate(content):
        if not isinstance(part, TextPart):
            raise InvalidArgumentError(
                f"messages[{index}].content[{number}].type",
                f"content parts of type {part.type!r} are not supported; send text parts",
            )
        texts.append(part.text)
    return "".join(texts)
