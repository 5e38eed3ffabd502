"""``/v1/responses`` with the official `openai` client: text in and out, streaming and not."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.openai_clients import MODEL, bad_request_param, openai_cluster

ASK = "Tell me about the sea."


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    with openai_cluster(2) as client:
        yield client


def test_a_response_holds_the_text_and_its_usage(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL, input=ASK, instructions="Answer briefly.", max_output_tokens=5
    )
    assert response.object == "response"
    assert response.output_text
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens == 5
    assert response.usage.total_tokens == response.usage.input_tokens + 5


def test_message_items_are_a_conversation(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "You are terse."},
            {"role": "user", "content": [{"type": "input_text", "text": ASK}]},
        ],
        max_output_tokens=4,
    )
    assert response.output_text


def test_the_stream_runs_from_created_to_the_end_with_the_same_text(
    client: openai.OpenAI,
) -> None:
    whole = client.responses.create(model=MODEL, input=ASK, max_output_tokens=8, temperature=0)
    events = list(
        client.responses.create(
            model=MODEL, input=ASK, max_output_tokens=8, temperature=0, stream=True
        )
    )
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == whole.output_text


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "function", "name": "f g"}]}, "tools[0].name"),
        ({"tool_choice": {"type": "function", "name": "f"}}, "tool_choice.name"),
        ({"tools": [{"type": "function", "name": "f"}],
          "text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"enum": []}}}},
         "text.format.schema"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]},
         "input[0].content[0].image_url"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input[0].content[0].type"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
    ],
)  # fmt: skip
def test_what_responses_do_not_serve_is_a_bad_request_naming_it(
    client: openai.OpenAI, extra: dict[str, object], param: str
) -> None:
    body = {"model": MODEL, "input": ASK, **extra}
    assert bad_request_param(client, "/responses", body) == param
