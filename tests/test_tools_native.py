"""Tool calling with a chat template that has its own tool syntax (the Hermes style, set as the
desired state's template override on the packaged model): the template gets the tools, a call
comes back from inside <tool_call> tags, and a tool result goes back into the template."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from paddler.v1 import desired_state_pb2, generation_pb2
from tests.cluster import Cluster, cluster
from tests.grammar_cases import WEATHER
from tests.hermes_template import HERMES_TEMPLATE
from tests.test_tools import (
    AUTO,
    NONE,
    REQUIRED,
    TIME_PARAMETERS,
    TOOLS,
    run,
    tool_request,
    user,
)

ASK = "What is the weather like in Paris right now?"


@pytest.fixture(scope="module")
def hermes() -> Iterator[Cluster]:
    """One balancer and one agent serving the packaged SmolLM2 with the Hermes template."""
    with cluster(("solo", 2)) as c:
        state = desired_state_pb2.DesiredState(
            model=desired_state_pb2.ModelSource(packaged="smollm2-135m"),
            chat_template_override=HERMES_TEMPLATE,
        )
        version = c.set_state(state)
        c.wait_applied(version)
        yield c


def test_the_template_itself_describes_the_tools(hermes: Cluster) -> None:
    shown, _ = run(hermes.inference, tool_request([user(ASK)], REQUIRED))
    hidden, _ = run(hermes.inference, tool_request([user(ASK)], NONE, max_tokens=1))
    # NONE shows no tools; otherwise the template's own block lists them (no system message
    # of ours is added in this format).
    tool_json = sum(len(json.dumps(t.parameters)) for t in TOOLS) // 8
    assert shown.summary.usage.prompt_tokens > hidden.summary.usage.prompt_tokens + tool_json


def test_a_required_call_comes_from_the_tags_and_validates(hermes: Cluster) -> None:
    reply, calls = run(hermes.inference, tool_request([user(ASK)], REQUIRED))
    assert reply.summary.finish_reason == generation_pb2.FINISH_REASON_TOOL_CALLS
    assert reply.text == ""
    assert len(calls) == 1
    schemas: dict[str, Any] = {"get_weather": WEATHER, "get_time": TIME_PARAMETERS}
    jsonschema.validate(json.loads(calls[0].arguments), schemas[calls[0].name])


def test_a_named_call_and_its_result_go_back_through_the_template(hermes: Cluster) -> None:
    choice = generation_pb2.ToolChoice(function="get_weather")
    _, calls = run(hermes.inference, tool_request([user(ASK)], choice))
    assert [call.name for call in calls] == ["get_weather"]
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
    history = [
        user(ASK),
        generation_pb2.ChatMessage(role="assistant", tool_calls=calls),
        generation_pb2.ChatMessage(role="tool", tool_call_id=calls[0].id, content="18 C, sunny"),
    ]
    reply, more = run(hermes.inference, tool_request(history, NONE, max_tokens=48))
    assert more == []
    assert reply.text
    assert "<tool_call>" not in reply.text


def test_under_auto_text_streams_and_a_call_in_tags_is_constrained(hermes: Cluster) -> None:
    """Under auto the text is free until the model opens a tag; what follows is a valid call."""
    for question in (ASK, "Write one short sentence about dogs.", "Call get_time for Tokyo."):
        reply, calls = run(hermes.inference, tool_request([user(question)], AUTO))
        assert "<tool_call>" not in reply.text
        for call in calls:
            schema = WEATHER if call.name == "get_weather" else TIME_PARAMETERS
            jsonschema.validate(json.loads(call.arguments), schema)
        if calls:
            assert reply.summary.finish_reason == generation_pb2.FINISH_REASON_TOOL_CALLS
        else:
            assert reply.text
