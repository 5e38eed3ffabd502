"""Tool calling through the OpenAI API with the official client: required and named calls,
streamed ``tool_calls`` deltas that add up to the whole call, a loop with the tool's result,
the Responses API's function tools, and bad tool fields named as OpenAI names them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.cluster import Cluster, cluster
from tests.grammar_cases import WEATHER
from tests.openai_clients import MODEL, bad_request_param, client_of

TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "description": "The time now (UTC)."},
    },
]
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather like in Paris right now?"}
]


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    """One balancer with one 2-slot agent."""
    with cluster(("solo", 2)) as c:
        yield c


@pytest.fixture(scope="module")
def client(shared: Cluster) -> Iterator[openai.OpenAI]:
    with client_of(shared) as c:
        yield c


def create(client: openai.OpenAI, **fields: Any) -> Any:
    defaults = {"model": MODEL, "messages": ASK, "tools": TOOLS, "temperature": 0, "max_tokens": 96}
    return client.chat.completions.create(**{**defaults, **fields})


def test_a_required_call_has_arguments_that_match_the_schema(client: openai.OpenAI) -> None:
    choice = create(client, tool_choice="required").choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        jsonschema.validate(arguments, WEATHER)
    else:
        assert call.function.name == "get_time"
        assert arguments == {}


def test_a_named_tool_choice_calls_that_function(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    calls = create(client, tool_choice=named).choices[0].message.tool_calls
    assert calls is not None
    assert [call.function.name for call in calls] == ["get_time"]


def test_streamed_tool_call_deltas_add_up_to_the_whole_call(client: openai.OpenAI) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    whole = create(client, tool_choice=named).choices[0].message.tool_calls[0]
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in create(client, tool_choice=named, stream=True):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for part in delta.tool_calls or ():
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += part.id or ""
            if part.function is not None:
                call["name"] += part.function.name or ""
                call["arguments"] += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["name"] == whole.function.name
    assert json.loads(calls[0]["arguments"]) == json.loads(whole.function.arguments)
    assert calls[0]["id"].startswith("call_")


def test_a_whole_loop_ends_in_text(client: openai.OpenAI) -> None:
    first = create(client, tool_choice="required").choices[0].message
    assert first.tool_calls
    call = first.tool_calls[0]
    messages: list[Any] = [
        *ASK,
        first.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18}'},
    ]
    answer = create(client, messages=messages, tool_choice="none", max_tokens=48).choices[0]
    assert answer.message.tool_calls is None
    assert answer.message.content
    assert answer.finish_reason in ("stop", "length")


def test_auto_answers_with_text_or_a_call(client: openai.OpenAI) -> None:
    ask: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Write one short sentence about dogs."}
    ]
    choice = create(client, messages=ask, tool_choice="auto").choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
    else:
        assert choice.message.content
        assert not choice.message.content.startswith('{"response"')
        assert choice.finish_reason == "stop"


def test_the_responses_api_calls_a_function_and_takes_its_output(client: openai.OpenAI) -> None:
    tools: list[Any] = [
        {"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": True}
    ]
    question = "What is the weather like in Paris right now?"
    response = client.responses.create(
        model=MODEL, input=question, tools=tools, tool_choice="required", temperature=0
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    follow_up: list[Any] = [
        {"role": "user", "content": question},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, cloudy"},
    ]  # fmt: skip
    answer = client.responses.create(
        model=MODEL, input=follow_up, tools=tools, tool_choice="none", max_output_tokens=32
    )
    assert answer.output_text


def test_streamed_responses_events_carry_the_call(client: openai.OpenAI) -> None:
    tools: list[Any] = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    events = list(
        client.responses.create(
            model=MODEL,
            input="Weather in Rome?",
            tools=tools,
            tool_choice="required",
            temperature=0,
            stream=True,
        )
    )
    kinds = [event.type for event in events]
    assert "response.function_call_arguments.done" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    jsonschema.validate(json.loads(done.arguments), WEATHER)
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice.function.name"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
         "tools[0].function.parameters"),
        ({"tools": [], "tool_choice": "required"}, "tool_choice"),
        ({"messages": [*ASK, {"role": "tool", "content": "18"}]}, "messages[1].tool_call_id"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"grammar": 'root ::= "a"'}, "grammar"),
        ({"json_schema": {"type": "object"}}, "json_schema"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
    ],
)  # fmt: skip
def test_a_bad_tool_field_is_a_bad_request_that_names_it(
    client: openai.OpenAI, extra: dict[str, object], param: str
) -> None:
    body = {"model": MODEL, "messages": ASK, "tools": TOOLS, **extra}
    assert bad_request_param(client, "/chat/completions", body) == param
