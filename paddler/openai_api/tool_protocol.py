"""OpenAI's function tools as chat completions and the Responses API write them, and how they
become our ``Tool``, ``ToolChoice`` and ``ToolCall``; errors about them are named the way
OpenAI's requests name the fields."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from paddler.common.errors import InvalidArgumentError
from paddler.v1 import generation_pb2

_TOOL_FIELD = re.compile(r"(tools\[\d+\])\.(name|parameters)")
# A content part of a message: ``messages[1].parts[0].image.data`` and so on.
_PART_FIELD = re.compile(r"(messages\[\d+\])\.parts\[(\d+)\](\.image(?:\..*)?)?")
_MODES = {
    "auto": generation_pb2.TOOL_CHOICE_MODE_AUTO,
    "none": generation_pb2.TOOL_CHOICE_MODE_NONE,
    "required": generation_pb2.TOOL_CHOICE_MODE_REQUIRED,
}


class FunctionSpec(BaseModel):
    """A chat tool's ``function``."""

    model_config = ConfigDict(extra="ignore")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    # We always enforce the parameters, so strict or not the arguments match them.
    strict: bool | None = None


class ChatTool(BaseModel):
    """A chat completion's tool: ``{"type": "function", "function": {...}}``."""

    type: Literal["function"]
    function: FunctionSpec


class FunctionTool(BaseModel):
    """A Responses API tool: the function's fields beside ``type``."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionName(BaseModel):
    """``{"name": ...}``."""

    name: str


class ChatNamedChoice(BaseModel):
    """Chat's named tool choice: ``{"type": "function", "function": {"name": ...}}``."""

    type: Literal["function"]
    function: FunctionName


class NamedChoice(BaseModel):
    """The Responses API's named tool choice: ``{"type": "function", "name": ...}``."""

    type: Literal["function"]
    name: str


class CalledFunction(BaseModel):
    """A call's ``function``: the arguments are JSON text."""

    name: str
    arguments: str


class ChatToolCall(BaseModel):
    """An assistant message's call."""

    model_config = ConfigDict(extra="ignore")
    id: Annotated[str, Field(min_length=1)]
    type: Literal["function"] = "function"
    function: CalledFunction


Mode = Literal["auto", "none", "required"]


def tool(
    name: str, description: str | None, parameters: dict[str, Any] | None
) -> generation_pb2.Tool:
    """Our Tool."""
    return generation_pb2.Tool(
        name=name,
        description=description or "",
        parameters=json.dumps(parameters) if parameters else "",
    )


def choice(mode: Mode | None, function: str | None) -> generation_pb2.ToolChoice:
    """Our ToolChoice from a mode or a function's name (neither: auto)."""
    if function is not None:
        return generation_pb2.ToolChoice(function=function)
    return generation_pb2.ToolChoice(mode=_MODES[mode or "auto"])


def call(identifier: str, name: str, arguments: str) -> generation_pb2.ToolCall:
    """Our ToolCall."""
    return generation_pb2.ToolCall(id=identifier, name=name, arguments=arguments)


@contextmanager
def openai_fields(rename: Callable[[str], str]) -> Iterator[None]:
    """Re-raise an InvalidArgumentError with its field as this API names it."""
    try:
        yield
    except InvalidArgumentError as error:
        violation = error.violations[0]
        raise InvalidArgumentError(rename(violation.field), violation.description) from None


def responses_field(field: str) -> str:
    """``input.conversation.tools[0].name`` -> ``tools[0].name``, and so on."""
    field = field.removeprefix("input.conversation.")
    if match := _PART_FIELD.fullmatch(field):
        return f"{match[1]}.content[{match[2]}]" + (".image_url" if match[3] else "")
    return "tool_choice.name" if field == "tool_choice.function" else field


def refuse_beside_tools(tools: object, choice: object, *formats: tuple[str, object]) -> None:
    """400 naming the first of ``formats`` (a constraint on the reply's form) that is set while
    tools may be called: the tools constrain the reply already."""
    if not tools or choice == "none":
        return
    for name, value in formats:
        if value is not None:
            raise InvalidArgumentError(
                name, "tools constrain the reply already; send one or the other"
            )


def chat_field(field: str) -> str:
    """``input.conversation.tools[0].name`` -> ``tools[0].function.name``, and so on."""
    field = field.removeprefix("input.conversation.")
    if field == "tool_choice.function":
        return "tool_choice.function.name"
    if match := _PART_FIELD.fullmatch(field):  # parts are numbered as the content's parts
        return f"{match[1]}.content[{match[2]}]" + (".image_url" if match[3] else "")
    if match := _TOOL_FIELD.fullmatch(field):
        return f"{match[1]}.function.{match[2]}"
    return field
