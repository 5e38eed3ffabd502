"""Tool calling over gRPC through the balancer, on the real model: required and named calls
whose arguments validate, text or a call under auto, plain text under none, a whole loop with
the tool's result, and every bad tool field refused with its name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from paddler.v1 import agent_pb2, generation_pb2
from tests.client import Reply, invalid_field
from tests.cluster import Cluster, cluster, to_inference
from tests.grammar_cases import WEATHER

TIME_PARAMETERS = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 20}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TOOLS = [
    generation_pb2.Tool(
        name="get_weather",
        description="The current weather in a city.",
        parameters=json.dumps(WEATHER),
    ),
    generation_pb2.Tool(
        name="get_time",
        description="The current time in a timezone.",
        parameters=json.dumps(TIME_PARAMETERS),
    ),
]
ASK = "What is the weather like in Paris right now?"


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    """One balancer with one 2-slot agent."""
    with cluster(("solo", 2)) as c:
        yield c


@pytest.fixture(scope="module")
def stub(shared: Cluster) -> Any:
    return shared.inference


def tool_request(
    messages: list[generation_pb2.ChatMessage],
    choice: generation_pb2.ToolChoice,
    tools: list[generation_pb2.Tool] | None = None,
    max_tokens: int = 96,
) -> agent_pb2.GenerateRequest:
    conversation = generation_pb2.Conversation(
        messages=messages, tools=TOOLS if tools is None else tools, tool_choice=choice
    )
    return agent_pb2.GenerateRequest(
        input=generation_pb2.GenerationInput(
            conversation=conversation,
            max_tokens=max_tokens,
            sampling=generation_pb2.SamplingParameters(temperature=0),
        )
    )


def user(text: str) -> generation_pb2.ChatMessage:
    return generation_pb2.ChatMessage(role="user", content=text)


REQUIRED = generation_pb2.ToolChoice(mode=generation_pb2.TOOL_CHOICE_MODE_REQUIRED)
AUTO = generation_pb2.ToolChoice(mode=generation_pb2.TOOL_CHOICE_MODE_AUTO)
NONE = generation_pb2.ToolChoice(mode=generation_pb2.TOOL_CHOICE_MODE_NONE)


def run(stub: Any, request: agent_pb2.GenerateRequest) -> tuple[Reply, list[Any]]:
    """The reply's text and summary, and its tool call events."""
    pieces, calls, summaries = [], [], []
    for response in stub.Generate(to_inference(request), timeout=120):
        event = response.WhichOneof("event")
        if event == "text":
            pieces.append(response.text)
        elif event == "tool_call":
            calls.append(response.tool_call)
        else:
            summaries.append(response.summary)
    assert len(summaries) == 1
    return Reply(pieces, summaries[0]), calls


def check_call(call: Any) -> None:
    """The call names one of the tools and its arguments validate against that tool."""
    schemas = {"get_weather": WEATHER, "get_time": TIME_PARAMETERS}
    assert call.id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), schemas[call.name])


def test_a_required_call_is_one_valid_call(stub: Any) -> None:
    reply, calls = run(stub, tool_request([user(ASK)], REQUIRED))
    assert reply.summary.finish_reason == generation_pb2.FINISH_REASON_TOOL_CALLS
    assert reply.text == ""
    assert len(calls) == 1
    check_call(calls[0])


def test_a_named_tool_choice_calls_that_function(stub: Any) -> None:
    choice = generation_pb2.ToolChoice(function="get_time")
    reply, calls = run(stub, tool_request([user(ASK)], choice))
    assert [call.name for call in calls] == ["get_time"]
    check_call(calls[0])
    assert reply.summary.finish_reason == generation_pb2.FINISH_REASON_TOOL_CALLS


def test_auto_gives_text_or_one_valid_call(stub: Any) -> None:
    for question in (ASK, "Write one short sentence about dogs."):
        reply, calls = run(stub, tool_request([user(question)], AUTO))
        if calls:
            assert len(calls) == 1
            check_call(calls[0])
            assert reply.text == ""
            assert reply.summary.finish_reason == generation_pb2.FINISH_REASON_TOOL_CALLS
        else:
            assert reply.text
            assert not reply.text.startswith("{")  # the text itself, not its JSON wrapper
            assert reply.summary.finish_reason == generation_pb2.FINISH_REASON_END_OF_GENERATION


def test_none_gives_plain_text(stub: Any) -> None:
    reply, calls = run(stub, tool_request([user(ASK)], NONE, max_tokens=24))
    assert calls == []
    assert reply.text
    assert reply.summary.finish_reason != generation_pb2.FINISH_REASON_TOOL_CALLS


def test_a_whole_loop_ends_in_a_text_answer(stub: Any) -> None:
    history = [user(ASK)]
    _, calls = run(stub, tool_request(history, REQUIRED))
    assert len(calls) == 1
    history.append(generation_pb2.ChatMessage(role="assistant", tool_calls=calls))
    history.append(
        generation_pb2.ChatMessage(
            role="tool",
            tool_call_id=calls[0].id,
            content=json.dumps({"temperature": 18, "sky": "cloudy"}),
        )
    )
    reply, more = run(stub, tool_request(history, NONE, max_tokens=48))
    assert more == []
    assert reply.text
    assert reply.summary.usage.prompt_tokens > 0


def bad(messages: list[generation_pb2.ChatMessage] | None = None, **fields: Any) -> Any:
    """A tool request with ``fields`` of the conversation replaced."""
    request = tool_request(messages or [user(ASK)], AUTO)
    conversation = request.input.conversation
    for name, value in fields.items():
        if name == "tools":
            del conversation.tools[:]
            conversation.tools.extend(value)
        else:
            conversation.tool_choice.CopyFrom(value)
    return request


@pytest.mark.parametrize(
    ("request_of", "field"),
    [
        (
            lambda: bad(tools=[generation_pb2.Tool(name="get weather")]),
            "input.conversation.tools[0].name",
        ),
        (lambda: bad(tools=[TOOLS[0], TOOLS[0]]), "input.conversation.tools[1].name"),
        (
            lambda: bad(tools=[generation_pb2.Tool(name="f", parameters="{")]),
            "input.conversation.tools[0].parameters",
        ),
        (
            lambda: bad(tools=[generation_pb2.Tool(name="f", parameters='{"type": "string"}')]),
            "input.conversation.tools[0].parameters",
        ),
        (
            lambda: bad(
                tools=[
                    generation_pb2.Tool(
                        name="f", parameters='{"type": "object", "properties": {"a": {"type": 5}}}'
                    )
                ]
            ),
            "input.conversation.tools[0].parameters",
        ),
        (  # the grammar engine takes it, jsonschema (which checks the calls) does not
            lambda: bad(
                tools=[
                    generation_pb2.Tool(
                        name="f",
                        parameters=json.dumps(
                            {"type": "object", "properties": {"a": {"description": 5}}}
                        ),
                    )
                ]
            ),
            "input.conversation.tools[0].parameters",
        ),
        (
            lambda: bad(tool_choice=generation_pb2.ToolChoice(function="get_date")),
            "input.conversation.tool_choice.function",
        ),
        (lambda: bad(tools=[], tool_choice=REQUIRED), "input.conversation.tool_choice"),
        (
            lambda: bad([user("hi"), generation_pb2.ChatMessage(role="tool", content="18")]),
            "input.conversation.messages[1].tool_call_id",
        ),
        (
            lambda: bad(
                [
                    generation_pb2.ChatMessage(
                        role="user", content="hi", tool_calls=[generation_pb2.ToolCall(name="f")]
                    )
                ]
            ),
            "input.conversation.messages[0].tool_calls",
        ),
    ],
)
def test_a_bad_tool_field_is_refused_naming_it(stub: Any, request_of: Any, field: str) -> None:
    assert invalid_field(stub, to_inference(request_of())) == field


def test_a_grammar_beside_tools_is_refused(stub: Any) -> None:
    request = tool_request([user(ASK)], AUTO)
    request.input.grammar.gbnf = 'root ::= "yes"'
    assert invalid_field(stub, to_inference(request)) == "input.grammar"
