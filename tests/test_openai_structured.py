"""Structured output through the OpenAI API with the official client: ``response_format``
(json_object, json_schema, the client's own ``parse``), the Responses API's ``text.format``,
and llama-server's ``json_schema`` and ``grammar`` fields."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field

from tests.cluster import Cluster, cluster
from tests.grammar_cases import SCHEMAS
from tests.openai_clients import MODEL, client_of

MAX_TOKENS = 96


@pytest.fixture(scope="module")
def shared() -> Iterator[Cluster]:
    """One balancer with one 2-slot agent."""
    with cluster(("solo", 2)) as c:
        yield c


@pytest.fixture(scope="module")
def client(shared: Cluster) -> Iterator[openai.OpenAI]:
    with client_of(shared) as c:
        yield c


def ask(question: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": question}]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_every_reply_in_a_json_schema_response_format_validates(
    client: openai.OpenAI, name: str, temperature: float
) -> None:
    question, schema = SCHEMAS[name]
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ask(question),
        max_tokens=MAX_TOKENS,
        temperature=temperature,
        seed=11,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "reply", "schema": schema, "strict": True},
        },
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content is not None
    jsonschema.validate(json.loads(choice.message.content), schema)


class Weather(BaseModel):
    """What the client's own ``parse`` sends as a strict schema and reads back."""

    city: str = Field(max_length=16)
    celsius: int = Field(ge=-40, le=50)
    sunny: bool


def test_the_clients_parse_gets_its_model_back(client: openai.OpenAI) -> None:
    reply = client.chat.completions.parse(
        model=MODEL,
        messages=ask("What is the weather in Lisbon?"),
        max_tokens=MAX_TOKENS,
        temperature=0,
        response_format=Weather,
    )
    parsed = reply.choices[0].message.parsed
    assert isinstance(parsed, Weather)
    assert -40 <= parsed.celsius <= 50


def test_json_object_mode_gives_a_json_object(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=ask("Describe a cat as JSON."),
        max_tokens=MAX_TOKENS,
        temperature=0,
        response_format={"type": "json_object"},
    )
    content = reply.choices[0].message.content
    assert content is not None
    assert isinstance(json.loads(content), dict)


def test_a_streamed_structured_reply_is_the_same_as_a_whole_one(client: openai.OpenAI) -> None:
    question, schema = SCHEMAS["nested object"]
    fields: dict[str, Any] = {
        "model": MODEL,
        "messages": ask(question),
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    }
    whole = client.chat.completions.create(**fields).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **fields))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole
    jsonschema.validate(json.loads(streamed), schema)


def test_the_responses_api_text_format_constrains_the_output(client: openai.OpenAI) -> None:
    question, schema = SCHEMAS["person"]
    response = client.responses.create(
        model=MODEL,
        input=question,
        max_output_tokens=MAX_TOKENS,
        temperature=0,
        text={"format": {"type": "json_schema", "name": "person", "schema": schema}},
    )
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), schema)
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_llama_servers_json_schema_field_works_on_completions(client: openai.OpenAI) -> None:
    _, schema = SCHEMAS["integer range"]
    reply = client.completions.create(
        model=MODEL,
        prompt="The rating of today's weather as JSON: ",
        max_tokens=MAX_TOKENS,
        temperature=0,
        extra_body={"json_schema": schema},
    )
    jsonschema.validate(json.loads(reply.choices[0].text), schema)


def test_llama_servers_grammar_field_constrains_a_chat(client: openai.OpenAI) -> None:
    replies = {
        client.chat.completions.create(
            model=MODEL,
            messages=ask(question),
            max_tokens=8,
            temperature=1.5,
            seed=seed,
            extra_body={"grammar": 'root ::= "yes" | "no"'},
        )
        .choices[0]
        .message.content
        for seed, question in enumerate(["Is fire hot?", "Is ice hot?"])
    }
    assert replies <= {"yes", "no"}
